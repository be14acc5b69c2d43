//! Writing to stdout: flushed at once (streams); a closed pipe ends the command quietly.

use std::io::Write as _;

use crate::error::CliError;

/// Writes and flushes `text` on stdout. A closed pipe is [`CliError::OutputClosed`]: the
/// command stops (a stream is not read on for nobody), and exits 0 without a message.
pub fn print(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(CliError::OutputClosed),
        Err(e) => Err(CliError::runtime(format!("cannot write to stdout: {e}"))),
    }
}

/// Whether stderr may use colour: a terminal, and `NO_COLOR` unset or empty.
pub fn colour_on_stderr() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Whether a progress line may be drawn on stderr: a terminal that understands `\r` and
/// erasing (`TERM` set and not `dumb`).
pub fn progress_on_stderr() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var("TERM").is_ok_and(|t| !t.is_empty() && t != "dumb")
}
