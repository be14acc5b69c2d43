//! The signals that end a command: SIGINT (Ctrl-C), SIGTERM and SIGHUP.

use tokio::signal::unix::{SignalKind, signal};

/// Resolves with the signal's name when one of SIGINT, SIGTERM or SIGHUP arrives. If a
/// handler cannot be installed, that signal keeps its default action.
pub async fn terminated() -> &'static str {
    let wait = |kind: SignalKind, name: &'static str| async move {
        match signal(kind) {
            Ok(mut s) => {
                s.recv().await;
                name
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        name = wait(SignalKind::interrupt(), "SIGINT") => name,
        name = wait(SignalKind::terminate(), "SIGTERM") => name,
        name = wait(SignalKind::hangup(), "SIGHUP") => name,
    }
}
