//! Hostile gateways and the checks that go with them, for the workspace's fault tests.
//!
//! - [`HostileServer`]: one real server on `127.0.0.1:0` whose behaviour is chosen by the
//!   first path segment (`http://ADDR/<fault>/v1`), from "never answers" to "echoes every
//!   credential it saw in every encoding". See [`Fault`] for the list.
//! - [`leaked_forms`]: which forms of a secret (raw, part of it, JSON-escaped, URL-encoded,
//!   base64) appear in a text, checked independently of the code under test.
//! - [`ConnectProxy`]: a real `CONNECT` proxy, as a corporate network has.
//! - [`OAuth2Servers`]: real OAuth2 servers from npm (`oauth2-mock-server`, `oidc-provider`)
//!   and a GitHub Actions token stand-in, on loopback, recording every token request.
//! - [`TlsFront`]: HTTPS in front of a plain-HTTP test server, for clients that send a
//!   credential only over TLS (kubectl).
//! - [`alive`] and [`PeakRss`]: no surviving process, bounded memory.
//! - [`TokenScript`]: a token command (a real shell script in a temp dir) that counts its
//!   runs, the one every test of the workspace uses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod connect_proxy;
mod oauth2_servers;
mod secrets;
mod server;
mod tls_front;
mod token_script;

pub use connect_proxy::ConnectProxy;
pub use oauth2_servers::{OAUTH2_CLIENT_ID, OAUTH2_CLIENT_SECRET, OAuth2Servers};
pub use secrets::{echo_in_every_encoding, leaked_forms};
pub use server::{Fault, HostileServer, SeenRequest};
pub use tls_front::TlsFront;
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

/// The fields of `/proc/PID/stat` after the command name (state first), if the process exists.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The CPU time (user plus system, every thread) the processes `pids` have used so far;
/// a process that is gone counts 0.
pub fn cpu_time(pids: &[u32]) -> Duration {
    static TICKS_PER_SECOND: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let ticks_per_second = *TICKS_PER_SECOND.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .filter(|&t: &u64| t > 0)
            .unwrap_or(100)
    });
    let ticks: u64 = pids
        .iter()
        .filter_map(|&pid| stat_fields(pid))
        .map(|f| {
            // utime and stime: fields 14 and 15 of stat(5), 11 and 12 after the name.
            let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            field(11) + field(12)
        })
        .sum();
    Duration::from_micros(ticks * 1_000_000 / ticks_per_second)
}

/// The processes whose parent is `pid` (e.g. nginx's workers under its master).
pub fn child_processes(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&candidate| {
            stat_fields(candidate).and_then(|f| f.get(1).and_then(|ppid| ppid.parse::<u32>().ok()))
                == Some(pid)
        })
        .collect()
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cpu_time_grows_with_work_and_child_processes_finds_a_child() {
        let me = std::process::id();
        let before = cpu_time(&[me]);
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(cpu_time(&[me]) >= before + Duration::from_millis(100));
        assert_eq!(cpu_time(&[u32::MAX]), Duration::ZERO);
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let found = child_processes(me).contains(&child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found);
    }
}
