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
