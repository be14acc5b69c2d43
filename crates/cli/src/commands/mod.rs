//! One module per subcommand.

pub mod bench;
pub mod check;
pub mod demo;
pub mod dev;
pub mod models;
pub mod proxy;
pub mod realtime;
pub mod token;
