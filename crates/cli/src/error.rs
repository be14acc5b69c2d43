//! The CLI's error type and its exit codes.

/// Exit status for success.
pub const EXIT_OK: u8 = 0;
/// Exit status for a runtime failure (token command, network, gateway).
pub const EXIT_RUNTIME: u8 = 1;
/// Exit status for an invalid config or usage.
pub const EXIT_USAGE: u8 = 2;

/// Why a command failed. The first line shown is one sentence; detail follows.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad flags or arguments (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The config file is missing or invalid (exit 2).
    #[error("invalid config: {0}")]
    Config(#[from] provider_config::ConfigError),
    /// Whoever read stdout went away (`modelauth realtime ... | head`): the command stops,
    /// silently, with exit 0.
    #[error("stdout was closed")]
    OutputClosed,
    /// A failure the output has already reported in full (`check --live --json`'s `ok:
    /// false`): exit 1, nothing on stderr.
    #[error("the failure is in the output")]
    Reported,
    /// Something failed at run time (exit 1).
    #[error("{summary}")]
    Runtime {
        /// One sentence.
        summary: String,
        /// Further lines, if any.
        detail: Option<String>,
    },
}

impl CliError {
    /// A runtime failure with one sentence.
    pub fn runtime(summary: impl Into<String>) -> Self {
        CliError::Runtime {
            summary: summary.into(),
            detail: None,
        }
    }

    /// A runtime failure from an error value: `context`, the error and its causes, on one
    /// line (`could not start the proxy: cannot listen on ADDR: Address already in use`).
    pub fn from_error(context: &str, err: &(dyn std::error::Error + 'static)) -> Self {
        let advice = login_advice(err).unwrap_or_default();
        CliError::runtime(format!("{context}: {}{advice}", with_causes(err)))
    }

    /// The same error with one more line of detail (a runtime failure), or unchanged.
    pub fn with_note(self, note: Option<String>) -> Self {
        match (self, note) {
            (CliError::Runtime { summary, detail }, Some(note)) => CliError::Runtime {
                summary,
                detail: Some(match detail {
                    Some(detail) => format!("{detail}\n  {note}"),
                    None => format!("  {note}"),
                }),
            },
            (err, _) => err,
        }
    }

    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Config(_) => EXIT_USAGE,
            CliError::Runtime { .. } | CliError::Reported => EXIT_RUNTIME,
            CliError::OutputClosed => EXIT_OK,
        }
    }

    /// The first line: the message, and for a config error the causes of the config error
    /// (an I/O error reading the file).
    fn sentence(&self) -> String {
        match self {
            CliError::Config(e) => format!("invalid config: {}", with_causes(e)),
            other => other.to_string(),
        }
    }

    /// The error on one line, without the `error: ` prefix (for a line of a report).
    pub fn render_plain(&self) -> String {
        let mut out = self.sentence();
        if let CliError::Runtime {
            detail: Some(detail),
            ..
        } = self
        {
            for line in detail.lines() {
                out.push_str("; ");
                out.push_str(line.trim());
            }
        }
        out
    }

    /// The text printed on stderr.
    pub fn render(&self) -> String {
        let mut out = format!("error: {}", self.sentence());
        if let CliError::Runtime {
            detail: Some(detail),
            ..
        } = self
        {
            out.push('\n');
            out.push_str(detail);
        }
        out
    }
}

/// How to sign in, for a token command that needs a person at a terminal it could not
/// have: the library says so; the command that signs in is the CLI's to name.
fn login_advice(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    use provider_auth::AuthError;
    let auth = err
        .downcast_ref::<AuthError>()
        .or_else(|| match err.downcast_ref::<model_client::ClientError>() {
            Some(model_client::ClientError::Auth(e)) => Some(e),
            _ => None,
        })
        .or_else(|| match err.downcast_ref::<realtime::RealtimeError>() {
            Some(realtime::RealtimeError::Auth(e)) => Some(e),
            _ => None,
        })?;
    match auth {
        AuthError::Command { provider, .. } if auth.needs_terminal() => {
            Some(format!(" with `modelauth login -p {provider}`"))
        }
        _ => None,
    }
}

/// An error and its causes on one line, `: `-separated. Every error type of the workspace
/// displays only its own message and returns its cause from `source()`, so nothing is said
/// twice.
pub fn with_causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
