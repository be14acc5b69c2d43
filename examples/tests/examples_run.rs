//! Every example runs to the end against the dev gateway and prints what it promises.
//! `cargo test` builds the examples before it runs this.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

/// `target/<profile>/examples/<name>`, beside this test's own `deps` folder.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    profile_dir.join("examples").join(name)
}

fn run(name: &str) -> String {
    let out = Command::new(example(name))
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap_or_else(|e| panic!("cannot run example {name}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn embed_client_recovers_from_a_rotation() {
    let out = run("embed_client");
    assert!(out.contains("models: dev-small, dev-large"), "{out}");
    assert!(out.contains("token command runs: 2"), "{out}");
}

#[test]
fn stream_response_prints_the_text() {
    let out = run("stream_response");
    assert!(out.contains("You said: Say hello in five words"), "{out}");
}

#[test]
fn plain_reqwest_by_hand_and_with_the_middleware() {
    let out = run("plain_reqwest");
    assert!(out.contains("by hand: HTTP 200 OK"), "{out}");
    assert!(
        out.contains("with AuthMiddleware after a rotation: HTTP 200 OK"),
        "{out}"
    );
    assert!(out.contains("token command runs: 3"), "{out}");
}

#[test]
fn async_openai_lists_models_with_command_tokens() {
    let out = run("async_openai");
    assert!(
        out.contains("async-openai listed: dev-small, dev-large"),
        "{out}"
    );
    assert!(out.contains("token command runs: 2"), "{out}");
}

#[test]
fn config_and_store_loads_a_config_file_and_uses_the_store() {
    let out = run("config_and_store");
    assert!(out.contains("corp: 2 models through "), "{out}");
    assert!(
        out.contains("token command runs: 1; read from the shared store: false"),
        "{out}"
    );
}

#[test]
fn axum_app_serves_through_both_clients_and_recovers_from_a_rotation() {
    let out = run("axum_app");
    assert!(out.contains("app /models: dev-small, dev-large"), "{out}");
    assert!(
        out.contains("app /raw after a rotation: HTTP 200 OK"),
        "{out}"
    );
    assert!(
        out.contains("token command runs: 2 (shared by both clients)"),
        "{out}"
    );
}
