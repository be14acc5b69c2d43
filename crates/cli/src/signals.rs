//! The signals that end a command: SIGINT (Ctrl-C), SIGTERM and SIGHUP.

use tokio::signal::unix::{SignalKind, signal};

/// Resolves with the signal's name when one of SIGINT, SIGTERM or SIGHUP arrives. If a
/// handler cannot be installed, that signal keeps its default action.
pub async fn terminated() -> &'static str {
    tokio::select! {
        name = stopped() => name,
        name = arrives(SignalKind::hangup(), "SIGHUP") => name,
    }
}

/// [`terminated`] without SIGHUP, for a command that reloads on it (`proxy --client-keys`).
pub async fn stopped() -> &'static str {
    tokio::select! {
        name = arrives(SignalKind::interrupt(), "SIGINT") => name,
        name = arrives(SignalKind::terminate(), "SIGTERM") => name,
    }
}

/// Resolves with `name` when the signal `kind` arrives (never, if no handler can be set).
async fn arrives(kind: SignalKind, name: &'static str) -> &'static str {
    match signal(kind) {
        Ok(mut s) => {
            s.recv().await;
            name
        }
        Err(_) => std::future::pending().await,
    }
}
