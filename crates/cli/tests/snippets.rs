//! Every shell, Python and JavaScript snippet of the README and `docs/` is run, so that none
//! can rot: each page's snippets in order, in one bash script, against the dev gateway, with
//! the built `modelauth` on `PATH`, in a fresh `HOME` whose default config file has the
//! provider `corp` (its token command prints one of the gateway's tokens).
//!
//! What the runner changes, and nothing else: the documented gateway
//! (`https://gateway.example.com/openai/v1`) is the dev gateway's URL; the proxy's port 8585 is a
//! free one (`modelauth proxy` gets `--listen`), and the script waits for its health
//! endpoint after starting it; `modelauth login`, which is for a terminal, gets one from
//! `script`; `seq 1 500` is `seq 1 3`. A `$ ` block is a transcript: its
//! other lines are the output the command must print first. Blocks of `cargo` commands are
//! run by `.ci/run`, which carries each of their lines as a `# docs:` comment above the
//! command that runs it (this test checks that it does).
//!
//! Python snippets run with the OpenAI SDK (`openai` on PyPI) and JavaScript ones with the
//! `openai` npm package, both installed by `.ci/run` under `$MODELAUTH_SDK_DIR` (default
//! `~/.cache/modelauth-ci/sdk`); without them those snippets are skipped with a message,
//! and under `CI=true` that is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/docs.rs"]
mod docs;
#[path = "support/sdk.rs"]
mod sdk;

use std::path::{Path, PathBuf};
use std::process::Command;

use dev_gateway::{DevGateway, GatewayConfig};

const DOCUMENTED_GATEWAY: &str = "https://gateway.example.com/openai/v1";
const DOCUMENTED_PROXY: &str = "127.0.0.1:8585";

/// What `stdout` of some blocks must hold: (page, the block's first line, text).
const EXPECTED: &[(&str, &str, &str)] = &[
    ("README.md", "modelauth check ", "corp"),
    ("README.md", "from openai import OpenAI", "dev-small"),
    ("docs/proxy.md", "export OPENAI_BASE_URL", "dev-small"),
    (
        "docs/proxy.md",
        "from openai import OpenAI",
        "response.completed",
    ),
    ("docs/proxy.md", "import OpenAI from", "dev-small"),
    ("docs/helpers.md", "# The shell, and curl", "dev-small"),
    ("docs/helpers.md", "modelauth login -p corp", "logged in"),
    ("docs/configuration.md", "modelauth schema", ""),
];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A block's first line that is not blank.
fn first_line(text: &str) -> &str {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim_start()
}

/// The block as the runner runs it (see the module's doc).
fn substituted(text: &str, gateway: &str, port: u16) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line = line
            .replace(DOCUMENTED_GATEWAY, gateway)
            .replace(DOCUMENTED_PROXY, &format!("127.0.0.1:{port}"))
            .replace("seq 1 500", "seq 1 3");
        let line = match line.strip_prefix("modelauth proxy") {
            Some(rest) if rest.is_empty() || rest.starts_with(' ') => {
                format!("modelauth proxy --listen 127.0.0.1:{port}{rest}")
            }
            // `login` is for a terminal: it gets one from `script`.
            _ if line.starts_with("modelauth login ") => {
                format!("script -qec '{}' /dev/null", command_part(&line))
            }
            _ => line,
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Waits (polling, at most 10 s) until the proxy on `port` answers its health endpoint.
fn wait_for_proxy(port: u16) -> String {
    format!(
        "i=0; until curl -sf http://127.0.0.1:{port}/_modelauth/health >/dev/null; do i=$((i+1)); [ $i -lt 200 ] || {{ echo 'the proxy did not start' >&2; exit 1; }}; sleep 0.05; done\n"
    )
}

/// The lines of `.ci/run` that say which documented line the command below them runs.
fn ci_documented_lines() -> Vec<String> {
    let ci = std::fs::read_to_string(docs::root().join(".ci/run")).unwrap();
    ci.lines()
        .filter_map(|l| l.trim_start().strip_prefix("# docs: "))
        .map(str::to_owned)
        .collect()
}

/// A documented line without its trailing comment.
fn command_part(line: &str) -> &str {
    line.split(" #").next().unwrap_or("").trim()
}

/// One page's script: its runnable blocks, in order, each one's stdout to `out-N`.
struct PageScript {
    script: String,
    /// (block's first line, its stdout file, what it must hold)
    outputs: Vec<(String, PathBuf, Option<&'static str>)>,
    /// (the transcript's expected lines, the file its command's stdout went to)
    transcripts: Vec<(Vec<String>, PathBuf)>,
}

fn page_script(
    page: &str,
    text: &str,
    gateway: &str,
    dir: &Path,
    sdk: Option<&Path>,
    ci: &[String],
) -> PageScript {
    let port = free_port();
    let mut script = String::from(
        "set -euo pipefail\ntrap 'status=$?; for job in $(jobs -p); do kill $job; done; wait || true; exit $status' EXIT\n",
    );
    let mut outputs = Vec::new();
    let mut transcripts = Vec::new();
    for (n, block) in docs::fenced_blocks(text).into_iter().enumerate() {
        let first = first_line(&block.text).to_owned();
        let out = dir.join(format!("out-{n}"));
        let expected = EXPECTED
            .iter()
            .find(|(p, start, _)| *p == page && first.starts_with(start))
            .map(|(_, _, text)| *text);
        match block.lang.as_str() {
            "sh" if first.starts_with("cargo ") || first.starts_with("RUSTC_BOOTSTRAP") => {
                for line in block.text.lines().map(command_part) {
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    assert!(
                        ci.iter().any(|c| c == line),
                        "{page}:{}: `{line}` is not run by .ci/run (add `# docs: {line}` above the command that runs it)",
                        block.line
                    );
                }
            }
            "sh" if first.starts_with("$ ") => {
                let mut lines = block.text.lines();
                let command = lines.next().unwrap().strip_prefix("$ ").unwrap();
                let command = substituted(command_part(command), gateway, port);
                let expect: Vec<String> = lines
                    .map(|l| substituted(l, gateway, port).trim_end().to_owned())
                    .collect();
                // A long-running command (the proxy) is started in the background.
                script.push_str(&format!(
                    "# {page}:{}\n{} > {} &\n{}",
                    block.line,
                    command.trim_end(),
                    out.display(),
                    wait_for_proxy(port)
                ));
                transcripts.push((expect, out));
            }
            "sh" => {
                let body = substituted(&block.text, gateway, port);
                script.push_str(&format!(
                    "# {page}:{}\n{{\n{body}}} > {}\n",
                    block.line,
                    out.display()
                ));
                if body.contains("modelauth proxy") {
                    script.push_str(&wait_for_proxy(port));
                }
                outputs.push((first, out, expected));
            }
            "python" | "js" => {
                let Some(sdk) = sdk else { continue };
                let body = substituted(&block.text, gateway, port);
                let run = if block.lang == "python" {
                    let file = dir.join(format!("snippet-{n}.py"));
                    std::fs::write(&file, body).unwrap();
                    format!("{}/py/bin/python3 {}", sdk.display(), file.display())
                } else {
                    let file = dir.join(format!("snippet-{n}.mjs"));
                    std::fs::write(&file, body).unwrap();
                    format!("node {}", file.display())
                };
                script.push_str(&format!(
                    "# {page}:{}\n{run} > {}\n",
                    block.line,
                    out.display()
                ));
                outputs.push((first, out, expected));
            }
            _ => {}
        }
    }
    PageScript {
        script,
        outputs,
        transcripts,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_snippet_runs() {
    let gw = DevGateway::start(GatewayConfig::default()).await.unwrap();
    let sdk = sdk::sdk_dir();
    let ci = ci_documented_lines();
    let mut ran = 0;
    let mut checked: Vec<(String, String)> = Vec::new();
    for (page, text) in docs::documentation() {
        let home = tempfile::tempdir().unwrap();
        let config_dir = home.path().join(".config/modelauth");
        std::fs::create_dir_all(&config_dir).unwrap();
        let token = home.path().join("token.sh");
        std::fs::write(
            &token,
            format!("#!/bin/sh\necho {}\n", gw.mint_token().access_token),
        )
        .unwrap();
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let config = format!(
            "model_provider = \"corp\"\n[model_providers.corp]\nname = \"Corp\"\nbase_url = \"{}\"\nauth = {{ command = \"{}\" }}\n",
            gw.base_url(),
            token.display()
        );
        std::fs::write(config_dir.join("config.toml"), &config).unwrap();
        // The measuring loop of docs/performance.md names its config `dev.toml`.
        std::fs::write(home.path().join("dev.toml"), &config).unwrap();
        let bin = home.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_modelauth"), bin.join("modelauth")).unwrap();
        if let Some(sdk) = &sdk {
            std::os::unix::fs::symlink(
                sdk.join("node/node_modules"),
                home.path().join("node_modules"),
            )
            .unwrap();
        }
        let page_run = page_script(
            &page,
            &text,
            &gw.base_url(),
            home.path(),
            sdk.as_deref(),
            &ci,
        );
        if page_run.outputs.is_empty() && page_run.transcripts.is_empty() {
            continue;
        }
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let runtime = home.path().join("run");
        std::fs::create_dir(&runtime).unwrap();
        std::fs::set_permissions(
            &runtime,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let script = page_run.script.clone();
        let home_path = home.path().to_owned();
        let out = tokio::task::spawn_blocking(move || {
            Command::new("bash")
                .arg("-c")
                .arg(&script)
                .current_dir(&home_path)
                .env_clear()
                .env("HOME", &home_path)
                .env("PATH", path)
                .env("XDG_RUNTIME_DIR", &runtime)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{page}: the snippets failed ({}):\n--- script\n{}\n--- stderr\n{}",
            out.status,
            page_run.script,
            String::from_utf8_lossy(&out.stderr)
        );
        for (first, file, expected) in &page_run.outputs {
            let printed = std::fs::read_to_string(file).unwrap();
            if let Some(expected) = expected {
                checked.push((page.clone(), first.clone()));
                assert!(
                    printed.contains(expected),
                    "{page}: `{first}` printed no `{expected}`:\n{printed}"
                );
            }
            ran += 1;
        }
        for (expected, file) in &page_run.transcripts {
            let printed = std::fs::read_to_string(file).unwrap();
            let printed: Vec<&str> = printed
                .lines()
                .map(str::trim_end)
                .take(expected.len())
                .collect();
            assert_eq!(printed, *expected, "{page}: the transcript's output");
            ran += 1;
        }
    }
    assert!(ran >= 8, "only {ran} snippets ran");
    // Every expectation met a block (none is left behind by an edit of its page).
    if sdk.is_some() {
        for (page, start, _) in EXPECTED {
            assert!(
                checked
                    .iter()
                    .any(|(p, first)| p == page && first.starts_with(start)),
                "{page}: no block starts with `{start}`"
            );
        }
    }
}
