//! The layering of ARCHITECTURE.md, checked: every crate's dependencies on workspace crates
//! are the ones its layer allows (a lower crate never depends on a higher one).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;

/// Each crate and the workspace crates it may depend on (normal dependencies).
const ALLOWED: &[(&str, &[&str])] = &[
    ("crates/provider-config", &[]),
    ("crates/provider-auth", &["provider-config", "transport"]),
    ("crates/event-stream", &[]),
    ("crates/transport", &[]),
    (
        "crates/model-client",
        &[
            "provider-config",
            "provider-auth",
            "event-stream",
            "transport",
        ],
    ),
    (
        "crates/realtime",
        &["provider-config", "provider-auth", "transport"],
    ),
    (
        "crates/proxy",
        &[
            "provider-config",
            "provider-auth",
            "event-stream",
            "realtime",
            "transport",
        ],
    ),
    ("crates/dev-gateway", &[]),
    ("crates/test-support", &["provider-config"]),
    (
        "crates/cli",
        &[
            "provider-config",
            "provider-auth",
            "event-stream",
            "model-client",
            "realtime",
            "proxy",
            "dev-gateway",
        ],
    ),
    ("xtask", &["provider-config"]),
    // Only dev-dependencies (examples are built and run by its test).
    ("examples", &[]),
];

/// Only tests and benches may use these.
const TEST_ONLY: &[&str] = &["test-support"];

/// Third-party crates a crate must not ship with (ARCHITECTURE.md): the proxy is hyper and
/// tokio-tungstenite alone, not a web framework; the libraries carry no dev gateway.
const NOT_SHIPPED: &[(&str, &[&str])] = &[
    ("crates/proxy", &["axum", "dev-gateway"]),
    ("crates/provider-auth", &["axum", "dev-gateway"]),
    ("crates/model-client", &["axum", "dev-gateway"]),
    ("crates/realtime", &["axum", "dev-gateway"]),
];

fn workspace_crates(root: &Path) -> BTreeSet<String> {
    let manifest: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    manifest["workspace"]["dependencies"]
        .as_table()
        .unwrap()
        .iter()
        .filter(|(_, v)| v.get("path").is_some())
        .map(|(k, _)| k.clone())
        .collect()
}

#[test]
fn every_crate_depends_only_on_the_layers_below_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ours = workspace_crates(&root);
    let members: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let listed: BTreeSet<&str> = members["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let checked: BTreeSet<&str> = ALLOWED.iter().map(|(c, _)| *c).collect();
    assert_eq!(listed, checked, "a workspace member has no layer here");
    for (krate, allowed) in ALLOWED {
        let manifest: toml::Table = std::fs::read_to_string(root.join(krate).join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
        let deps: BTreeSet<&str> = manifest
            .get("dependencies")
            .and_then(|d| d.as_table())
            .map(|t| {
                t.keys()
                    .map(String::as_str)
                    .filter(|d| ours.contains(*d))
                    .collect()
            })
            .unwrap_or_default();
        let allowed: BTreeSet<&str> = allowed.iter().copied().collect();
        let extra: Vec<&&str> = deps.difference(&allowed).collect();
        assert!(
            extra.is_empty(),
            "{krate} depends on {extra:?}, above its layer"
        );
        for t in TEST_ONLY {
            assert!(!deps.contains(t), "{krate} ships {t}");
        }
        let all: BTreeSet<&str> = manifest
            .get("dependencies")
            .and_then(|d| d.as_table())
            .map(|t| t.keys().map(String::as_str).collect())
            .unwrap_or_default();
        for (_, never) in NOT_SHIPPED.iter().filter(|(c, _)| c == krate) {
            for n in *never {
                assert!(!all.contains(n), "{krate} ships {n}");
            }
        }
    }
}

/// ARCHITECTURE.md's "may depend on" column names only what the crate really depends on:
/// every dependency of the workspace named there is in that crate's manifest (for
/// `examples`, among its dev-dependencies).
#[test]
fn the_architecture_table_names_only_real_dependencies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let workspace: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let known: BTreeSet<&str> = workspace["workspace"]["dependencies"]
        .as_table()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let architecture = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut rows = 0;
    for line in architecture.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // `| `crates/x` | what it is for | may depend on |`
        let [_, krate, _, column, _] = cells[..] else {
            continue;
        };
        let krate = krate.trim_matches('`');
        let manifest_path = root.join(krate).join("Cargo.toml");
        if !manifest_path.exists() {
            continue;
        }
        rows += 1;
        let manifest: toml::Table = std::fs::read_to_string(&manifest_path)
            .unwrap()
            .parse()
            .unwrap();
        let section = if krate == "examples" {
            "dev-dependencies"
        } else {
            "dependencies"
        };
        let deps: BTreeSet<&str> = manifest
            .get(section)
            .and_then(|d| d.as_table())
            .map(|t| t.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let named: BTreeSet<&str> = column
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .filter(|word| known.contains(word))
            .collect();
        let missing: Vec<&&str> = named.difference(&deps).collect();
        assert!(
            missing.is_empty(),
            "ARCHITECTURE.md says {krate} depends on {missing:?}; its Cargo.toml does not"
        );
    }
    assert!(rows >= 10, "only {rows} rows of the crate table were read");
}
