//! `modelauth proxy` against the same upstream reached directly and through nginx (a reverse
//! proxy with a static `Authorization` header), with the same load generator. Baseline and
//! candidates are interleaved (A, B, C, A, B, C ...) and the median of the per-round ratios
//! is reported, so that a noisy machine cannot bias a ratio.
//!
//! Each nginx round also reports the CPU time (user plus system) a request costs the proxy
//! process and nginx's processes: a figure that does not depend on how busy the machine is.
//!
//! Run with `cargo bench -p modelauth --bench proxy` (or `cargo xtask bench`). nginx is used
//! when it is on PATH (`apt-get install nginx-light`); without it those rows are skipped.
//! `PROXY_BENCH_ROUNDS` (default 5) and `PROXY_BENCH_SECONDS` (default 2) size the runs.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dev_gateway::{DevGateway, Fault, GatewayConfig, Route};
use model_client::ModelClient;
use modelauth::load::{LoadLimit, LoadReport, run_load};
use provider_auth::{AuthManager, AuthToken, NoAuthManager, StaticAuthManager};
use provider_config::ModelProviderInfo;

const BIN: &str = env!("CARGO_BIN_EXE_modelauth");

/// A child stopped with SIGTERM when dropped (SIGKILL after 5 s): nginx's master stops its
/// workers on SIGTERM, where SIGKILL would leave them running.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn client(base_url: &str, auth: Arc<dyn AuthManager>) -> ModelClient {
    ModelClient::new("bench", ModelProviderInfo::new("Bench", base_url), auth).unwrap()
}

fn start_proxy(dir: &Path, gw: &DevGateway) -> (Killed, String) {
    start_proxy_on(dir, gw, "127.0.0.1:0")
}

/// The proxy on `listen` (`HOST:PORT` or `unix:PATH`); what follows `listening on `.
fn start_proxy_on(dir: &Path, gw: &DevGateway, listen: &str) -> (Killed, String) {
    std::fs::write(dir.join("token"), gw.mint_token().access_token).unwrap();
    let script = dir.join("token.sh");
    std::fs::write(&script, "#!/bin/sh\ncat token\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[model_providers.dev]\nname = \"Dev\"\nbase_url = \"{}\"\nauth = {{ command = \"./token.sh\" }}\n",
            gw.base_url()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(dir.join("config.toml"))
        .args(["proxy", "--listen", listen])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap();
    let addr = addr.strip_prefix("http://").unwrap_or(addr).to_owned();
    (Killed(child), addr)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_nginx(dir: &Path, gw: &DevGateway, token: &str) -> Option<(Killed, String)> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let port = free_port();
    let root = dir.join("nginx");
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    let conf = format!(
        "daemon off;\nuser root;\nworker_processes 2;\npid {root}/nginx.pid;\nerror_log {root}/error.log;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n access_log off;\n client_body_temp_path {root}/tmp;\n proxy_temp_path {root}/tmp;\n\
         fastcgi_temp_path {root}/tmp;\n uwsgi_temp_path {root}/tmp;\n scgi_temp_path {root}/tmp;\n\
         upstream gw {{ server {upstream}; keepalive 256; }}\n\
         server {{\n  listen 127.0.0.1:{port};\n  location /dev/ {{\n   proxy_pass http://gw/v1/;\n\
         proxy_http_version 1.1;\n   proxy_set_header Connection \"\";\n\
         proxy_set_header Authorization \"Bearer {token}\";\n   proxy_buffering off;\n  }}\n }}\n}}\n",
        root = root.display(),
        upstream = gw.addr(),
    );
    std::fs::write(root.join("nginx.conf"), conf).unwrap();
    let child = Command::new(nginx)
        .arg("-c")
        .arg(root.join("nginx.conf"))
        .arg("-p")
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((Killed(child), format!("127.0.0.1:{port}")))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

/// `load`'s report, and the CPU time (user plus system) `pids` used for each of its
/// requests, in µs.
async fn with_cpu(
    pids: &[u32],
    load: impl std::future::Future<Output = LoadReport>,
) -> (LoadReport, f64) {
    let before = test_support::cpu_time(pids);
    let report = load.await;
    let used = test_support::cpu_time(pids).saturating_sub(before);
    let per_request = used.as_secs_f64() * 1e6 / report.requests.max(1) as f64;
    (report, per_request)
}

/// Time to the first body byte of a streamed `POST /responses`.
async fn first_byte(http: &reqwest::Client, url: &str, token: &str) -> Duration {
    let started = Instant::now();
    let mut response = http
        .post(url)
        .bearer_auth(token)
        .json(&serde_json::json!({"model": "dev-small", "input": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    response.chunk().await.unwrap();
    let elapsed = started.elapsed();
    while let Ok(Some(_)) = response.chunk().await {}
    elapsed
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::var("PROXY_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let seconds: u64 = std::env::var("PROXY_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let gw = DevGateway::start(GatewayConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token = gw.mint_token().access_token;
    let (proxy, proxy_addr) = start_proxy(dir.path(), &gw);
    let nginx = start_nginx(dir.path(), &gw, &token);
    if nginx.is_none() {
        eprintln!("nginx not found: its rows are skipped (apt-get install nginx-light)");
    }
    let direct = client(
        &gw.base_url(),
        Arc::new(StaticAuthManager::new(
            "bench",
            AuthToken::new(token.clone()),
        )),
    );
    let through_proxy = client(
        &format!("http://{proxy_addr}/dev"),
        Arc::new(StaticAuthManager::new(
            "bench",
            AuthToken::new("sk-dummy".into()),
        )),
    );
    let through_nginx = nginx.as_ref().map(|(_, addr)| {
        client(
            &format!("http://{addr}/dev"),
            Arc::new(NoAuthManager::new("bench")),
        )
    });
    // Warm every path (the proxy's first token, connection pools).
    for c in [Some(&direct), Some(&through_proxy), through_nginx.as_ref()]
        .into_iter()
        .flatten()
    {
        run_load(c, LoadLimit::Requests(2000), 16, None).await;
    }

    // The processes whose CPU time a request costs (nginx's workers exist by now).
    let proxy_pids = [proxy.0.id()];
    let nginx_pids: Vec<u32> = nginx
        .as_ref()
        .map(|(master, _)| {
            let mut pids = test_support::child_processes(master.0.id());
            pids.push(master.0.id());
            pids
        })
        .unwrap_or_default();
    println!(
        "| scenario | baseline | measured | ratio (median of {rounds} interleaved rounds) | target |"
    );
    println!("|---|---|---|---|---|");
    let load = LoadLimit::Duration(Duration::from_secs(seconds));
    for concurrency in [16, 64] {
        let mut direct_runs: Vec<LoadReport> = Vec::new();
        let mut proxy_runs: Vec<LoadReport> = Vec::new();
        let mut nginx_runs: Vec<LoadReport> = Vec::new();
        // CPU µs per request of the proxy process and of nginx's processes, per round.
        let (mut proxy_cpu, mut nginx_cpu) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            direct_runs.push(run_load(&direct, load, concurrency, None).await);
            let (report, cpu) = with_cpu(
                &proxy_pids,
                run_load(&through_proxy, load, concurrency, None),
            )
            .await;
            proxy_runs.push(report);
            proxy_cpu.push(cpu);
            if let Some(n) = &through_nginx {
                let (report, cpu) =
                    with_cpu(&nginx_pids, run_load(n, load, concurrency, None)).await;
                nginx_runs.push(report);
                nginx_cpu.push(cpu);
            }
        }
        let show = |runs: &[LoadReport]| {
            format!(
                "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
                median(runs.iter().map(|r| r.rps).collect()),
                median(runs.iter().map(|r| r.p50_ms).collect()),
                median(runs.iter().map(|r| r.p99_ms).collect())
            )
        };
        let ratios = |a: &[LoadReport], b: &[LoadReport]| {
            let rps = median(a.iter().zip(b).map(|(a, b)| b.rps / a.rps).collect());
            let p99 = median(a.iter().zip(b).map(|(a, b)| b.p99_ms / a.p99_ms).collect());
            format!("{rps:.2}x throughput, p99 {p99:.2}x")
        };
        let failed: u64 = proxy_runs.iter().map(|r| r.failed).sum();
        println!(
            "| GET /models c={concurrency}: proxy vs direct ({failed} failed) | direct: {} | proxy: {} | {} | (cost of a hop) |",
            show(&direct_runs),
            show(&proxy_runs),
            ratios(&direct_runs, &proxy_runs)
        );
        if !nginx_runs.is_empty() {
            println!(
                "| GET /models c={concurrency}: proxy vs nginx | nginx: {} | proxy: {} | {} | >= 0.8x throughput, p99 <= 1.5x |",
                show(&nginx_runs),
                show(&proxy_runs),
                ratios(&nginx_runs, &proxy_runs)
            );
            println!(
                "| CPU per request c={concurrency} (user + system): proxy vs nginx | nginx: {:.1} µs | proxy: {:.1} µs | {:.2}x | - |",
                median(nginx_cpu.clone()),
                median(proxy_cpu.clone()),
                median(
                    proxy_cpu
                        .iter()
                        .zip(&nginx_cpu)
                        .map(|(p, n)| p / n)
                        .collect()
                )
            );
        }
    }

    // Added time to the first SSE byte: triplets of (direct, proxy on TCP, proxy on a Unix
    // socket) requests, interleaved.
    let socket_dir = tempfile::tempdir().unwrap();
    let socket = socket_dir.path().join("proxy.sock");
    let (unix_proxy, _) = start_proxy_on(
        socket_dir.path(),
        &gw,
        &format!("unix:{}", socket.display()),
    );
    let http = reqwest::Client::new();
    let over_socket = reqwest::Client::builder()
        .unix_socket(socket.clone())
        .build()
        .unwrap();
    let (mut added, mut added_unix, mut base) = (Vec::new(), Vec::new(), Vec::new());
    let direct_url = format!("{}/responses", gw.base_url());
    let proxy_url = format!("http://{proxy_addr}/dev/responses");
    let unix_url = "http://localhost/dev/responses".to_owned();
    for _ in 0..300 {
        let d = first_byte(&http, &direct_url, &token).await;
        let p = first_byte(&http, &proxy_url, "sk-dummy").await;
        let u = first_byte(&over_socket, &unix_url, "sk-dummy").await;
        base.push(d.as_secs_f64() * 1000.0);
        added.push((p.as_secs_f64() - d.as_secs_f64()) * 1000.0);
        added_unix.push((u.as_secs_f64() - d.as_secs_f64()) * 1000.0);
    }
    let added_p99 = percentile(added.clone(), 0.99);
    let added_unix_p99 = percentile(added_unix.clone(), 0.99);
    println!(
        "| first SSE byte, POST /responses: added by the proxy (300 pairs) | direct: p50 {:.2} ms, p99 {:.2} ms | added: p50 {:.2} ms, p99 {:.2} ms | - | added p99 < 1 ms |",
        percentile(base.clone(), 0.5),
        percentile(base, 0.99),
        percentile(added.clone(), 0.5),
        added_p99
    );
    println!(
        "| first SSE byte, added by the proxy: Unix socket vs loopback TCP (300 triplets) | TCP: p50 {:.2} ms, p99 {:.2} ms | Unix socket: p50 {:.2} ms, p99 {:.2} ms | added p99 {:.2}x | <= 1.1x |",
        percentile(added, 0.5),
        added_p99,
        percentile(added_unix, 0.5),
        added_unix_p99,
        added_unix_p99 / added_p99
    );

    // Memory: 1000 concurrent idle streams held open through the proxy, on TCP and then on
    // the Unix socket.
    gw.set_fault(
        Route::Responses,
        Some(Fault::SlowStream {
            delay: Duration::from_secs(120),
        }),
    );
    for (label, pid, client, url) in [
        (
            "TCP",
            proxy.0.id(),
            reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            proxy_url.clone(),
        ),
        (
            "a Unix socket",
            unix_proxy.0.id(),
            reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .unix_socket(socket.clone())
                .build()
                .unwrap(),
            unix_url.clone(),
        ),
    ] {
        let idle_before = test_support::rss_kib(pid);
        let mut open = Vec::new();
        for _ in 0..1000 {
            let s = client.clone();
            let url = url.clone();
            open.push(tokio::spawn(async move {
                s.post(url)
                    .bearer_auth("sk-dummy")
                    .json(&serde_json::json!({"model": "dev-small", "input": "hi", "stream": true}))
                    .send()
                    .await
            }));
        }
        let mut responses = Vec::new();
        for o in open {
            responses.push(o.await.unwrap().unwrap());
        }
        let held = test_support::rss_kib(pid);
        println!(
            "| RSS of the proxy with 1,000 concurrent idle SSE streams on {label} | idle: {:.1} MiB | 1,000 streams: {:.1} MiB | {:.1} KiB per stream | < 64 MiB |",
            idle_before as f64 / 1024.0,
            held as f64 / 1024.0,
            (held.saturating_sub(idle_before)) as f64 / 1000.0
        );
        drop(responses);
    }
    drop(unix_proxy);
    drop(nginx);
    drop(proxy);
}
