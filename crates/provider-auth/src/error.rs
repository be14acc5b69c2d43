//! The one error type of this crate.

use std::fmt;
use std::sync::Arc;

/// Why a token could not be had. Never contains the token nor the command's stdout.
///
/// Cloneable: one failed command run is shared by every caller that waited for it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The token command failed.
    #[error("provider `{provider}`: token command `{program}` {failure}")]
    Command {
        /// Provider id.
        provider: Arc<str>,
        /// The program as configured.
        program: Arc<str>,
        /// What went wrong.
        failure: CommandFailure,
    },
    /// The provider's `env_key` variable is not set.
    #[error("provider `{provider}`: environment variable `{var}` is not set or empty{}", instructions_suffix(.instructions))]
    MissingEnvKey {
        /// Provider id.
        provider: Arc<str>,
        /// The variable.
        var: String,
        /// `env_key_instructions`, if configured.
        instructions: Option<String>,
    },
    /// A static credential cannot be sent as a header (e.g. an env var with a newline).
    #[error("provider `{provider}`: {what} is not a valid bearer token ({reason})")]
    InvalidStaticToken {
        /// Provider id.
        provider: Arc<str>,
        /// Where it came from, e.g. "environment variable `X`".
        what: String,
        /// Why (never the value).
        reason: &'static str,
    },
    /// The provider wants the application's base session, and none was given.
    #[error(
        "provider `{provider}`: requires_openai_auth is set but the application has no base session credentials"
    )]
    NoBaseSession {
        /// Provider id.
        provider: Arc<str>,
    },
    /// The gateway rejected a token right after it was minted, and the rejected-token
    /// breaker holds the next run back (§5): the command is not run once per request.
    #[error(
        "provider `{provider}`: the gateway rejected a newly minted token from {origin}; the next run is held back {}{}", wait(*.retry_in_ms), expired_note(.expired_at)
    )]
    Rejected {
        /// Provider id.
        provider: Arc<str>,
        /// The token source, e.g. "command `gcloud`".
        origin: String,
        /// Time left until the next run may start.
        retry_in_ms: u64,
        /// The expiry the token stated, when it had already passed (RFC 3339): the
        /// likely reason for the rejection.
        expired_at: Option<String>,
    },
    /// A recent run failed (in this process or, through the shared store, another one) and
    /// the failure backoff holds the next run back: callers get the failure at once.
    #[error("{message} (the next run is held back {})", wait(*.retry_in_ms))]
    Backoff {
        /// Provider id.
        provider: Arc<str>,
        /// The failed run's message (it names the provider and the program).
        message: String,
        /// Time left until the next run may start.
        retry_in_ms: u64,
    },
    /// An exchange with the OAuth2 token endpoint (or its discovery document, or the
    /// subject token's source) failed (`auth.oauth2`).
    #[error("provider `{provider}`: oauth2 `{grant}`: token endpoint {endpoint} {failure}")]
    OAuth2 {
        /// Provider id.
        provider: Arc<str>,
        /// The grant (`client_credentials`, ...).
        grant: &'static str,
        /// The endpoint's host (and port), and which endpoint when not the token endpoint.
        endpoint: String,
        /// What went wrong.
        failure: OAuth2Failure,
    },
    /// A custom [`crate::ExternalAuthRefresher`] failed.
    #[error("provider `{provider}`: token source failed: {message}")]
    Source {
        /// Provider id.
        provider: Arc<str>,
        /// Its message (must not contain the token).
        message: String,
    },
}

fn wait(ms: u64) -> String {
    if ms >= 1000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

fn expired_note(expired_at: &Option<String>) -> String {
    expired_at
        .as_ref()
        .map(|at| {
            format!(
                "; the token states it expired at {at}: the helper printed an expired token (a stale cache of its own?) or this machine's clock is off"
            )
        })
        .unwrap_or_default()
}

fn instructions_suffix(instructions: &Option<String>) -> String {
    instructions
        .as_ref()
        .map(|i| format!(". {i}"))
        .unwrap_or_default()
}

impl AuthError {
    /// The same error, naming `provider` (a cache shared by several providers reports the
    /// provider of whoever asked).
    pub fn for_provider(mut self, id: &Arc<str>) -> Self {
        match &mut self {
            AuthError::Command { provider, .. }
            | AuthError::MissingEnvKey { provider, .. }
            | AuthError::InvalidStaticToken { provider, .. }
            | AuthError::NoBaseSession { provider }
            | AuthError::Rejected { provider, .. }
            | AuthError::Backoff { provider, .. }
            | AuthError::OAuth2 { provider, .. }
            | AuthError::Source { provider, .. } => *provider = id.clone(),
        }
        self
    }
}

impl AuthError {
    /// Whether the token command needs a person at a terminal and could not have one: an
    /// application can say how its user signs in on a terminal (`modelauth` says `modelauth
    /// login -p ID`).
    pub fn needs_terminal(&self) -> bool {
        matches!(
            self,
            AuthError::Command {
                failure: CommandFailure::NeedsTerminal { .. },
                ..
            }
        )
    }

    /// The same error with a failed command's stderr excerpt cut to its last `max_chars`
    /// characters (where a script's own error message is; the trace before it is left
    /// out): for an answer that leaves the machine's user, such as the proxy's
    /// `token_unavailable` body.
    pub fn with_short_stderr(mut self, max_chars: usize) -> Self {
        if let AuthError::Command {
            failure: CommandFailure::Exited { stderr, .. },
            ..
        } = &mut self
        {
            let count = stderr.chars().count();
            if count > max_chars
                && let Some((at, _)) = stderr.char_indices().nth(count - max_chars)
            {
                *stderr = format!("...{}", stderr.get(at..).unwrap_or_default());
            }
        }
        self
    }

    /// The same error with every text from outside (a command's stderr excerpt, a source's
    /// message) scrubbed of the tokens `scrubber` knows: a refresh script that traces the
    /// previous token on stderr (`set -x`, `curl -v`) and fails must not put it in an error.
    pub fn scrubbed(mut self, scrubber: &crate::Scrubber) -> Self {
        match &mut self {
            AuthError::Command {
                failure: CommandFailure::Exited { stderr, .. },
                ..
            } => *stderr = scrubber.scrub(stderr),
            AuthError::Source { message, .. } | AuthError::Backoff { message, .. } => {
                *message = scrubber.scrub(message);
            }
            AuthError::OAuth2 {
                failure:
                    OAuth2Failure::Refused {
                        description: Some(description),
                        ..
                    },
                ..
            } => *description = scrubber.scrub(description),
            _ => {}
        }
        self
    }
}

/// Why a token command failed, each cause with what the user needs to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandFailure {
    /// No such program on `PATH` or at the resolved path.
    NotFound {
        /// Where it was looked for.
        looked_in: String,
    },
    /// The file exists but cannot be executed.
    NotExecutable {
        /// The resolved path.
        path: String,
    },
    /// The working directory does not exist.
    CwdMissing {
        /// The directory.
        cwd: String,
    },
    /// Spawning failed for another reason.
    Spawn {
        /// The OS error.
        reason: String,
    },
    /// It ran longer than `timeout_ms`; its process group was killed.
    TimedOut {
        /// The limit.
        timeout_ms: u64,
    },
    /// It exited with a non-zero status or was killed by a signal.
    Exited {
        /// e.g. "status 3" or "signal 9".
        status: String,
        /// The last 2 KiB of stderr, control characters removed (empty when it went to
        /// the terminal).
        stderr: String,
        /// Its stderr went to the terminal (an interactive run): nothing was captured.
        on_terminal: bool,
    },
    /// It printed more than 64 KiB on stdout.
    OutputTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Its output is not UTF-8.
    NotUtf8,
    /// Its output is not a usable token (empty, whitespace inside, control characters).
    InvalidToken {
        /// Why.
        reason: &'static str,
    },
    /// `format = "json"` and the output is not one of the accepted shapes.
    BadJson {
        /// Why (never the output itself).
        reason: String,
    },
    /// It needs the terminal (`auth.interactive = "always"`, or `modelauth login`) and
    /// cannot have it now.
    NeedsTerminal {
        /// Why not now.
        why: &'static str,
    },
    /// Reading its output failed.
    Io {
        /// The OS error.
        reason: String,
    },
}

impl fmt::Display for CommandFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandFailure::NotFound { looked_in } => write!(f, "was not found ({looked_in})"),
            CommandFailure::NotExecutable { path } => {
                write!(f, "is not executable ({path}: permission denied)")
            }
            CommandFailure::CwdMissing { cwd } => {
                write!(f, "cannot run: its working directory {cwd} does not exist")
            }
            CommandFailure::Spawn { reason } => write!(f, "could not be started: {reason}"),
            CommandFailure::TimedOut { timeout_ms } => {
                write!(f, "timed out after {timeout_ms} ms and was killed")
            }
            CommandFailure::Exited {
                status,
                stderr,
                on_terminal,
            } => {
                write!(f, "exited with {status}")?;
                if *on_terminal {
                    write!(
                        f,
                        " (what it printed on stderr went to the terminal, above)"
                    )
                } else if stderr.is_empty() {
                    write!(f, " and printed nothing on stderr")
                } else {
                    write!(f, "; stderr: {stderr}")
                }
            }
            CommandFailure::OutputTooLarge { limit } => write!(
                f,
                "printed more than {} KiB on stdout; the output was discarded",
                limit / 1024
            ),
            CommandFailure::NotUtf8 => write!(f, "printed output that is not UTF-8"),
            CommandFailure::InvalidToken { reason } => write!(f, "{reason}"),
            CommandFailure::BadJson { reason } => write!(f, "printed unusable JSON: {reason}"),
            CommandFailure::Io { reason } => write!(f, "could not be read from: {reason}"),
            CommandFailure::NeedsTerminal { why } => write!(
                f,
                "needs a terminal to ask you and {why}; sign in on a terminal first"
            ),
        }
    }
}

/// Why an exchange with a token endpoint failed. Never holds a secret: an endpoint's
/// `error_description` is kept only scrubbed of every secret of the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OAuth2Failure {
    /// The endpoint could not be reached.
    Unreachable {
        /// Why (the transport's error, without the URL).
        reason: String,
    },
    /// The exchange took longer than `auth.timeout_ms`.
    TimedOut {
        /// The limit.
        timeout_ms: u64,
    },
    /// The endpoint answered with a redirect, which is never followed (the secret would go
    /// with it).
    Redirect {
        /// The status.
        status: u16,
    },
    /// The endpoint refused the grant with an OAuth2 `error` code.
    Refused {
        /// The status.
        status: u16,
        /// The `error` code (`invalid_client`, `invalid_grant`, ...), visible ASCII only.
        code: String,
        /// The `error_description`, scrubbed and cut short.
        description: Option<String>,
    },
    /// The endpoint answered an error status without an OAuth2 error.
    Status {
        /// The status.
        status: u16,
    },
    /// The answer was larger than [`crate::MAX_OAUTH2_RESPONSE_BYTES`].
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The answer is not a usable token response.
    BadResponse {
        /// Why (never the answer itself).
        reason: String,
    },
    /// A secret or the subject token could not be had.
    Input {
        /// What (e.g. "client secret: environment variable `X`").
        what: String,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for OAuth2Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OAuth2Failure::Unreachable { reason } => write!(f, "could not be reached: {reason}"),
            OAuth2Failure::TimedOut { timeout_ms } => {
                write!(f, "did not answer within {timeout_ms} ms (auth.timeout_ms)")
            }
            OAuth2Failure::Redirect { status } => write!(
                f,
                "answered HTTP {status}, a redirect, which is not followed; set the endpoint's final URL"
            ),
            OAuth2Failure::Refused {
                status,
                code,
                description,
            } => {
                write!(f, "refused the request (HTTP {status}): `{code}`")?;
                if let Some(hint) = code_hint(code) {
                    write!(f, " ({hint})")?;
                }
                match description {
                    Some(d) => write!(f, "; it says: {d}"),
                    None => Ok(()),
                }
            }
            OAuth2Failure::Status { status } => {
                write!(f, "answered HTTP {status} without an OAuth2 error code")
            }
            OAuth2Failure::TooLarge { limit } => write!(
                f,
                "answered more than {} KiB; the answer was discarded",
                limit / 1024
            ),
            OAuth2Failure::BadResponse { reason } => {
                write!(f, "answered without a usable token: {reason}")
            }
            OAuth2Failure::Input { what, reason } => write!(f, "was not asked: {what} {reason}"),
        }
    }
}

/// What to check for the common OAuth2 error codes.
fn code_hint(code: &str) -> Option<&'static str> {
    Some(match code {
        "invalid_client" => "check client_id and the client secret",
        "invalid_grant" => {
            "the subject or refresh token was not accepted: expired, revoked, or for another audience"
        }
        "unauthorized_client" => "this client may not use this grant",
        "unsupported_grant_type" => "the endpoint does not offer this grant",
        "invalid_scope" => "check scope, audience and resource",
        "invalid_target" => "check audience and resource",
        "invalid_request" => "a parameter is missing or not accepted",
        "slow_down" => "asked too often",
        "access_denied" => "the person or the policy denied it",
        _ => return None,
    })
}

/// Why a folder cannot hold the shared token store ([`crate::SharedStore::at`],
/// [`crate::SharedStore::from_env`]). Each says only its own part; an I/O cause is its
/// [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The folder could not be created, or its metadata read.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// `create` or `read`.
        action: &'static str,
        /// The folder.
        path: std::path::PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The path is a file or a link.
    #[error("{} is not a folder (or is a link)", path.display())]
    NotAFolder {
        /// The path.
        path: std::path::PathBuf,
    },
    /// The folder (or the nearest existing folder above it) belongs to another user.
    #[error("{} belongs to another user (uid {owner}, this process runs as uid {me})", path.display())]
    OtherOwner {
        /// The folder.
        path: std::path::PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        me: u32,
    },
    /// The folder lets other users in.
    #[error("{} is open to other users (mode {mode:o}); it must be 0700", path.display())]
    OpenToOthers {
        /// The folder.
        path: std::path::PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A folder named by an environment variable, passed over for its cause.
    #[error("{var}")]
    Named {
        /// The variable (`XDG_RUNTIME_DIR`).
        var: &'static str,
        /// Why its folder cannot be used.
        #[source]
        source: Box<StoreError>,
    },
    /// The environment names no folder at all.
    #[error("no folder for it: MODELAUTH_CACHE_DIR, XDG_RUNTIME_DIR and HOME are unset")]
    NoFolder,
}
