//! Property test: on generated config files, the parser and the schema agree. Every file
//! the parser accepts, the schema accepts; every file the parser rejects, the schema
//! rejects, but for the one rule JSON Schema cannot state (`model_provider` naming a
//! defined provider: a reference between keys).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The JSON schema is the `schema` feature (on by default).
#![cfg(feature = "schema")]

use std::path::Path;

use proptest::prelude::*;
use provider_config::{ConfigError, config_schema_json, parse_config_str};

/// A TOML value text, valid or not for some key.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_owned()),
        Just("1".to_owned()),
        Just("5000".to_owned()),
        Just("600000".to_owned()),
        Just("600001".to_owned()),
        Just("101".to_owned()),
        Just("-1".to_owned()),
        Just("true".to_owned()),
        Just("\"\"".to_owned()),
        Just("\"  \"".to_owned()),
        Just("\"gcloud\"".to_owned()),
        Just("\"json\"".to_owned()),
        Just("\"chat\"".to_owned()),
        Just("\"https://gw.example.com/v1\"".to_owned()),
        Just("\"http://127.0.0.1:8080\"".to_owned()),
        Just("\"https://u:p@gw/v1\"".to_owned()),
        Just("\"https://gw/v1?x=1\"".to_owned()),
        Just("\"http:///v1\"".to_owned()),
        Just("\"ftp://gw/v1\"".to_owned()),
        Just("\"tok en\"".to_owned()),
        Just("[\"a\", \"b\"]".to_owned()),
        Just("[1]".to_owned()),
        Just("{ X-Team = \"a\" }".to_owned()),
        Just("{ \"bad name\" = \"a\" }".to_owned()),
        Just("{ A = \"B\" }".to_owned()),
        Just("{ \"A=B\" = \"c\" }".to_owned()),
        Just("[401, 403]".to_owned()),
        Just("[403]".to_owned()),
        Just("[401, 401]".to_owned()),
        Just("\"Host\"".to_owned()),
        Just("\"api-key\"".to_owned()),
        Just("\"if_available\"".to_owned()),
    ]
}

fn provider_key() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("name"),
        Just("base_url"),
        Just("env_key"),
        Just("experimental_bearer_token"),
        Just("wire_api"),
        Just("query_params"),
        Just("http_headers"),
        Just("env_http_headers"),
        Just("request_max_retries"),
        Just("stream_max_retries"),
        Just("stream_idle_timeout_ms"),
        Just("connect_timeout_ms"),
        Just("request_timeout_ms"),
        Just("websocket_connect_timeout_ms"),
        Just("requires_openai_auth"),
        Just("surprise"),
    ]
}

fn auth_key() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("command"),
        Just("args"),
        Just("timeout_ms"),
        Just("refresh_interval_ms"),
        Just("cwd"),
        Just("env"),
        Just("format"),
        Just("reauth_on"),
        Just("header"),
        Just("scheme"),
        Just("interactive"),
        Just("interactive_timeout_ms"),
        Just("surprise"),
    ]
}

/// A config file: one provider with a random set of keys, maybe an auth table, maybe a
/// `model_provider` line.
fn config_text() -> impl Strategy<Value = String> {
    (
        prop::collection::btree_map(provider_key(), value(), 0..8),
        prop::option::of(prop::collection::btree_map(auth_key(), value(), 0..5)),
        prop::option::of(prop_oneof![Just("corp"), Just("openai"), Just("nope")]),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![4 => Just("corp"), 1 => Just("openai"), 1 => Just("ollama")],
    )
        .prop_map(|(provider, auth, default, with_name, with_url, id)| {
            let mut text = String::new();
            if let Some(id) = default {
                text.push_str(&format!("model_provider = \"{id}\"\n"));
            }
            text.push_str(&format!("[model_providers.{id}]\n"));
            if with_name && !provider.contains_key("name") {
                text.push_str("name = \"Corp\"\n");
            }
            if with_url && !provider.contains_key("base_url") {
                text.push_str("base_url = \"https://gw.example.com/v1\"\n");
            }
            for (k, v) in &provider {
                text.push_str(&format!("{k} = {v}\n"));
            }
            if let Some(auth) = auth {
                text.push_str(&format!("[model_providers.{id}.auth]\n"));
                for (k, v) in &auth {
                    text.push_str(&format!("{k} = {v}\n"));
                }
            }
            text
        })
}

/// The schema's validator, generated and compiled once for every case.
static VALIDATOR: std::sync::LazyLock<jsonschema::Validator> = std::sync::LazyLock::new(|| {
    let schema: serde_json::Value = serde_json::from_str(&config_schema_json()).unwrap();
    jsonschema::validator_for(&schema).unwrap()
});

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parser_and_schema_agree_on_generated_configs(text in config_text()) {
        let validator = &*VALIDATOR;
        let value: toml::Value = toml::from_str(&text).unwrap();
        let schema_ok = validator.is_valid(&serde_json::to_value(value).unwrap());
        match parse_config_str(&text, Path::new("gen.toml"), None) {
            Ok(_) => prop_assert!(schema_ok, "the schema rejects what the parser accepts:\n{text}"),
            Err(ConfigError::Invalid { key_path, .. }) if key_path == "model_provider" => {}
            Err(e) => prop_assert!(!schema_ok, "the schema accepts what the parser rejects ({e}):\n{text}"),
        }
    }
}
