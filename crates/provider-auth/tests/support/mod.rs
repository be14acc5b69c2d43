//! Token scripts (`test_support::TokenScript`: real processes written into a temp dir, every
//! run counted in `runs` beside the script) and process probes for the auth tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[allow(unused_imports)]
pub use test_support::{TokenScript as Script, alive as process_alive, wait_until};

/// Whether a process exists at all (a zombie counts).
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `n` callers at once on a cold `cache`: every one gets the first generation, so they all
/// shared one run (the caller counts the runs its source made).
pub async fn cold_callers_share_the_first_generation(
    cache: &std::sync::Arc<provider_auth::TokenCache>,
    n: usize,
) {
    let callers: Vec<_> = (0..n)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.credential().await.map(|c| c.generation) })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap(), 1);
    }
}
