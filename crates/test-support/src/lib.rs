//! Hostile gateways and the checks that go with them, for the workspace's fault tests.
//!
//! - [`HostileServer`]: one real server on `127.0.0.1:0` whose behaviour is chosen by the
//!   first path segment (`http://ADDR/<fault>/v1`), from "never answers" to "echoes every
//!   credential it saw in every encoding". See [`Fault`] for the list.
//! - [`leaked_forms`]: which forms of a secret (raw, part of it, JSON-escaped, URL-encoded,
//!   base64) appear in a text, checked independently of the code under test.
//! - [`ConnectProxy`]: a real `CONNECT` proxy, as a corporate network has.
//! - [`alive`] and [`PeakRss`]: no surviving process, bounded memory.
//! - [`TokenScript`]: a token command (a real shell script in a temp dir) that counts its
//!   runs, the one every test of the workspace uses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod connect_proxy;
mod secrets;
mod server;
mod token_script;

pub use connect_proxy::ConnectProxy;
pub use secrets::{echo_in_every_encoding, leaked_forms};
pub use server::{Fault, HostileServer, SeenRequest};
pub use token_script::{TokenScript, wait_until};

use std::time::{Duration, Instant};

/// Whether a process is running (present and not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
        })
        .is_some_and(|state| !matches!(state, 'Z' | 'X'))
}

/// Waits until none of `pids` is running, at most `limit` (a killed process takes a moment
/// to go). Returns the ones still running.
pub fn still_alive_after(pids: &[u32], limit: Duration) -> Vec<u32> {
    let deadline = Instant::now() + limit;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A process's resident memory now, in KiB (0 if it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Runs `serve` for every connection accepted on `127.0.0.1:0`, on a thread of its own
/// (usable from sync and async tests alike), until the returned sender is dropped or used.
pub(crate) fn serve_on_thread<F, Fut>(
    serve: F,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let accept = async {
                loop {
                    if let Ok((stream, _)) = listener.accept().await {
                        tokio::spawn(serve(stream));
                    }
                }
            };
            tokio::select! {
                () = accept => {}
                _ = stopped => {}
            }
        });
        runtime.shutdown_background();
    });
    (addr_rx.recv().unwrap(), stop)
}

/// Samples a process's resident memory until it exits; [`PeakRss::peak_kib`] is the
/// highest sample.
pub struct PeakRss {
    handle: std::thread::JoinHandle<u64>,
}

impl PeakRss {
    /// Starts sampling `pid` every 5 ms.
    pub fn watch(pid: u32) -> Self {
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            // A process that is gone (or a zombie) reads as 0.
            loop {
                let kib = rss_kib(pid);
                if kib == 0 {
                    break peak;
                }
                peak = peak.max(kib);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self { handle }
    }

    /// The highest resident size seen, in KiB (after the process exited).
    pub fn peak_kib(self) -> u64 {
        self.handle.join().unwrap_or(0)
    }
}
