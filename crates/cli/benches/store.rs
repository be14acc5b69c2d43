//! The shared store as a token helper: a warm `modelauth token --show` (a store hit) against
//! `modelauth --version` (process start alone), interleaved, and 50 concurrent cold calls.
//!
//! Run with `cargo bench -p modelauth --bench store` (or `cargo xtask bench`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_modelauth");
const PAIRS: usize = 200;

fn timed(dir: &std::path::Path, args: &[&str]) -> Duration {
    let started = Instant::now();
    let status = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("MODELAUTH_CACHE_DIR", dir.join("store"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    started.elapsed()
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("token.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho run >> runs\nsleep 0.3\necho tok-bench-$(date +%s%N)\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "model_provider = \"corp\"\n[model_providers.corp]\nname = \"Corp\"\nbase_url = \"http://127.0.0.1:9/v1\"\nauth = { command = \"./token.sh\" }\n",
    )
    .unwrap();
    let token = ["--config", "config.toml", "token", "--show"];
    // Cold: 50 concurrent processes, one run.
    let children: Vec<_> = (0..50)
        .map(|_| {
            Command::new(BIN)
                .args(token)
                .current_dir(dir.path())
                .env("MODELAUTH_CACHE_DIR", dir.path().join("store"))
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let cold = Instant::now();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let cold = cold.elapsed();
    let runs = std::fs::read_to_string(dir.path().join("runs"))
        .unwrap()
        .lines()
        .count();
    // Warm: interleaved pairs.
    let (mut version, mut warm, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..PAIRS {
        let v = timed(dir.path(), &["--version"]).as_secs_f64() * 1000.0;
        let t = timed(dir.path(), &token).as_secs_f64() * 1000.0;
        version.push(v);
        warm.push(t);
        ratios.push(t / v);
    }
    println!("| scenario | baseline | measured | ratio | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| warm `token --show` (store hit) vs `--version`, {PAIRS} interleaved pairs | p50 {:.2} ms, p99 {:.2} ms | p50 {:.2} ms, p99 {:.2} ms | {:.2}x (median of per-pair ratios) | <= 1.5x |",
        percentile(version.clone(), 0.5),
        percentile(version, 0.99),
        percentile(warm.clone(), 0.5),
        percentile(warm, 0.99),
        percentile(ratios, 0.5)
    );
    println!(
        "| 50 concurrent cold `token --show` (300 ms command) | - | {runs} run, all done {:.0} ms after the last spawn | - | 1 run |",
        cold.as_secs_f64() * 1000.0
    );
}
