//! The committed schema is fresh, and the schema and the parser agree on every example.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The JSON schema is the `schema` feature (on by default).
#![cfg(feature = "schema")]

mod support;

use std::path::{Path, PathBuf};

use provider_config::{ConfigError, config_schema_json, parse_config_str};

fn examples(kind: &str) -> Vec<PathBuf> {
    support::toml_files(&format!("examples/{kind}"))
}

fn validator() -> jsonschema::Validator {
    let schema: serde_json::Value = serde_json::from_str(&config_schema_json()).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

/// TOML text as the JSON value the schema describes.
fn as_json(text: &str) -> serde_json::Value {
    let value: toml::Value = toml::from_str(text).unwrap();
    serde_json::to_value(value).unwrap()
}

fn parse(path: &Path) -> Result<provider_config::Config, ConfigError> {
    let text = std::fs::read_to_string(path).unwrap();
    parse_config_str(&text, path, None)
}

#[test]
fn committed_schema_is_fresh() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema/config.schema.json");
    let committed = std::fs::read_to_string(committed).unwrap();
    assert!(
        committed == config_schema_json(),
        "schema/config.schema.json is stale: run `cargo xtask schema` and commit it"
    );
}

#[test]
fn there_are_at_least_25_examples() {
    let n = examples("valid").len() + examples("invalid").len() + examples("cross").len();
    assert!(n >= 25, "only {n} examples");
}

#[test]
fn valid_examples_are_accepted_by_parser_and_schema() {
    let validator = validator();
    for path in examples("valid") {
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(e) = parse(&path) {
            panic!("parser rejected {}: {e}", path.display());
        }
        let errors: Vec<String> = validator
            .iter_errors(&as_json(&text))
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "schema rejected {}: {errors:?}",
            path.display()
        );
    }
}

#[test]
fn invalid_examples_are_rejected_by_parser_and_schema() {
    let validator = validator();
    for path in examples("invalid") {
        let text = std::fs::read_to_string(&path).unwrap();
        match parse(&path) {
            Ok(_) => panic!("parser accepted {}", path.display()),
            Err(ConfigError::Toml { .. }) => {}
            Err(other) => panic!(
                "{} should fail as a TOML/type error, got: {other}",
                path.display()
            ),
        }
        assert!(
            !validator.is_valid(&as_json(&text)),
            "schema accepted {}",
            path.display()
        );
    }
}

#[test]
fn cross_field_examples_are_rejected_by_parser_and_wherever_it_can_by_schema() {
    let validator = validator();
    // A reference between keys: JSON Schema cannot check it, the parser alone does.
    let schema_cannot_say = ["unknown_default_provider.toml"];
    for path in examples("cross") {
        match parse(&path) {
            Err(ConfigError::Invalid { .. }) => {}
            other => panic!(
                "{} should fail a cross-field rule, got {other:?}",
                path.display()
            ),
        }
        let name = path.file_name().unwrap().to_str().unwrap();
        let value = as_json(&std::fs::read_to_string(&path).unwrap());
        assert_eq!(
            validator.is_valid(&value),
            schema_cannot_say.contains(&name),
            "{name}: the schema and the parser disagree"
        );
    }
}

#[test]
fn schema_has_an_id() {
    let schema: serde_json::Value = serde_json::from_str(&config_schema_json()).unwrap();
    assert_eq!(schema["$id"], provider_config::SCHEMA_ID);
}

#[test]
fn every_auth_field_appears_in_the_schema() {
    let schema: serde_json::Value = serde_json::from_str(&config_schema_json()).unwrap();
    let auth = &schema["$defs"]["ModelProviderAuthInfo"]["properties"];
    for key in [
        "command",
        "args",
        "timeout_ms",
        "refresh_interval_ms",
        "cwd",
        "env",
        "format",
    ] {
        assert!(auth.get(key).is_some(), "schema lacks auth.{key}");
    }
    assert!(!config_schema_json().contains("\"null\""));
}
