//! The proxy's bounds against clients (SPEC §8), on the real binary under a 1,024
//! open-file limit, and its memory under hostile uploads. In a binary of their own, and one
//! at a time, so that no other test competes with their thousands of connections and
//! gigabytes of uploads for the machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/proxy_setup.rs"]
mod proxy_setup;
use proxy_setup::{Killed, gateway_and_config, listening_address, terminate};

const BIN: &str = env!("CARGO_BIN_EXE_modelauth");

/// Held by each test while it runs: the tests here measure the machine and must not share it.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Found in trial: 1,100 connections that never finish their head took every file the
/// proxy had under the common 1,024 limit, and every real request timed out; 1,000
/// concurrent clients got up to 94% `502 Too many open files`. Under `ulimit -n 1024`
/// (soft and hard), with the slow heads held open, a real client's 20 requests are each
/// answered within 1 s; then 1,000 concurrent clients make 3 requests each, and none gets
/// a 502 (each may retry once a connection the proxy closed as it reused it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_and_a_thousand_clients_under_1024_open_files() {
    use tokio::io::AsyncWriteExt as _;
    let _alone = ONE_AT_A_TIME.lock().await;
    // This test's own side needs more than 2,100 files.
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= 4096,
        "the test needs a hard open-file limit of 4096, not {hard}"
    );
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let (gw, dir) = gateway_and_config().await;
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -n 1024 && exec \"$0\" \"$@\""])
        .arg(BIN)
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .args(["proxy", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = listening_address(&mut child);
    let child = Killed(child);

    let mut slow = Vec::new();
    for _ in 0..1100 {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        // A head that never ends.
        let _ = tcp
            .write_all(b"GET /corp/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .await;
        slow.push(tcp);
    }
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/corp/models");
    for i in 0..20 {
        let started = Instant::now();
        let answer = client.get(&url).send().await.unwrap();
        assert_eq!(answer.status(), 200, "request {i}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "request {i} took {:?}",
            started.elapsed()
        );
    }
    let stats = proxy_setup::stats(&client, &addr).await;
    let open = stats["connections"]["open"].as_u64().unwrap();
    let max = stats["connections"]["max"].as_u64().unwrap();
    // A third of what 1,024 files leave after the reserve.
    assert!(max < 320 && open <= max, "{stats}");
    drop(slow);

    // One client, so that the test's own side stays light: its pool opens a connection for
    // each request in flight, up to 1,000.
    let shared = reqwest::Client::new();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let url = url.clone();
        let client = shared.clone();
        clients.spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..3 {
                // A keep-alive connection the proxy closes as the client reuses it (it
                // was idle, or opened and never used, when a place was needed) fails at
                // the connection level; clients retry that once, as the OpenAI SDKs do.
                let mut outcome = 0;
                for _attempt in 0..2 {
                    match client.get(&url).send().await {
                        Ok(answer) => {
                            outcome = answer.status().as_u16();
                            // Read to the end, so that the connection is kept for the next.
                            let _ = answer.bytes().await;
                            break;
                        }
                        Err(e) => {
                            let mut cause: &dyn std::error::Error = &e;
                            while let Some(source) = cause.source() {
                                cause = source;
                            }
                            eprintln!("request failed, retried once: {cause}");
                        }
                    }
                }
                statuses.push(outcome);
            }
            statuses
        });
    }
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    while let Some(done) = clients.join_next().await {
        for status in done.unwrap() {
            *statuses.entry(status).or_default() += 1;
        }
    }
    assert_eq!(statuses, [(200, 3000)].into(), "status: count");

    // Found in trial: after a burst the proxy kept every upstream connection idle (1,190
    // files). At most 128 stay pooled: the established connections to the gateway (the
    // proxy's ends, whose remote port is the gateway's) come down to that, where up to
    // 256 would stay without the cap.
    let gw_port = reqwest::Url::parse(&gw.base_url()).unwrap().port().unwrap();
    let upstream = || {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        table
            .lines()
            .skip(1)
            .filter(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.get(2).is_some_and(|remote| {
                    remote.rsplit(':').next() == Some(&format!("{gw_port:04X}")[..])
                }) && fields.get(3) == Some(&"01")
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream() > 128 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        upstream() <= 128,
        "{} upstream connections open",
        upstream()
    );
    terminate(&child.0);
}

/// The proxy's resident memory, in bytes: now (`VmRSS`) and its peak (`VmHWM`).
fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .map(|kb| kb.trim().parse::<u64>().unwrap() * 1024)
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Found in trial: 200 clients each sending all but the last byte of an 8 MiB body took
/// the proxy from 10 MB to 1.75 GB resident, 1.59 GB still held after they left. With
/// the replay budget, the peak stays under the bound the README states, and once they
/// close the proxy comes back near where it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_stalled_uploads_stay_within_the_memory_bound() {
    use tokio::io::AsyncWriteExt as _;
    const BODY: usize = 8 * 1024 * 1024;
    let _alone = ONE_AT_A_TIME.lock().await;
    let (_gw, dir) = gateway_and_config().await;
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .args(["proxy", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = listening_address(&mut child);
    let child = Killed(child);
    let pid = child.0.id();
    let client = reqwest::Client::new();
    let stats = || proxy_setup::stats(&client, &addr);
    // Warm: a token fetched, a request forwarded.
    let answer = client
        .get(format!("http://{addr}/corp/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let (start, _) = memory_of(pid);

    let body = std::sync::Arc::new(vec![b' '; BODY - 1]);
    let mut uploads = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let body = body.clone();
        let addr = addr.clone();
        uploads.spawn(async move {
            let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let head = format!(
                "POST /corp/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {BODY}\r\n\r\n"
            );
            // All but the last byte; a body the gateway stops reading breaks the write.
            let _ = tcp.write_all(head.as_bytes()).await;
            let _ = tcp.write_all(&body).await;
            tcp
        });
    }
    let mut held = Vec::new();
    while let Some(tcp) = uploads.join_next().await {
        held.push(tcp.unwrap());
    }
    let during = stats().await;
    let (_, peak) = memory_of(pid);
    const MIB: u64 = 1024 * 1024;
    eprintln!(
        "start {} MiB, peak {} MiB, replay buffers {}",
        start / MIB,
        peak / MIB,
        during["replay_buffered_bytes"]
    );
    assert!(
        during["replay_buffered_bytes"].as_u64().unwrap() <= 128 * MIB,
        "{during}"
    );
    // The README's bound: the replay budget and 64 MiB for everything else.
    assert!(peak <= 192 * MIB, "peak {} MiB", peak / MIB);

    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = stats().await;
        let (rss, _) = memory_of(pid);
        if now["replay_buffered_bytes"] == 0 && rss <= start + 32 * MIB {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the uploads closed: {now}, {} MiB resident (started at {} MiB)",
            rss / MIB,
            start / MIB
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    terminate(&child.0);
}
