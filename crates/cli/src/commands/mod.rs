//! One module per subcommand.

pub mod bench;
pub mod check;
#[cfg(feature = "demo")]
pub mod demo;
pub mod dev;
pub mod models;
pub mod proxy;
pub mod realtime;
pub mod token;
