//! Running the token command: no shell, own process group, bounded output, always reaped.

use std::io::IsTerminal as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use provider_config::{Interactive, ModelProviderAuthInfo};
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::process::{Child, Command};

use crate::error::{AuthError, CommandFailure};
use crate::format::parse_output;
use crate::refresher::{ExternalAuthRefresher, RefreshReason};
use crate::scrub::Scrubber;
use crate::token::FreshToken;

/// Largest stdout accepted from a token command.
pub const MAX_STDOUT_BYTES: usize = 64 * 1024;
/// How much of the end of stderr is kept for error messages.
pub const MAX_STDERR_EXCERPT_BYTES: usize = 2 * 1024;
/// After the command exits, how long output still in flight may take to arrive (a
/// background grandchild may hold the pipe open; what the command wrote is already there).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(250);

/// Obtains tokens by running the configured command.
#[derive(Debug, Clone)]
pub struct CommandRefresher {
    provider: Arc<str>,
    auth: ModelProviderAuthInfo,
    force_terminal: bool,
}

/// Whether this process may give a token command the terminal (false in the proxy).
static PROMPTS_ALLOWED: AtomicBool = AtomicBool::new(true);

/// From now on, no token command of this process gets the terminal, whatever
/// `auth.interactive` says: a command that needs one fails fast with a hint to run
/// `modelauth login`. For servers (the proxy), whose terminal is not their users'.
pub fn disable_prompts() {
    PROMPTS_ALLOWED.store(false, Ordering::Relaxed);
}

fn has_terminal() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

impl CommandRefresher {
    /// A refresher for `auth`; `provider` names it in errors.
    pub fn new(provider: impl Into<Arc<str>>, auth: ModelProviderAuthInfo) -> Self {
        Self {
            provider: provider.into(),
            auth,
            force_terminal: false,
        }
    }

    /// The same refresher giving the command the terminal every time, whatever
    /// `auth.interactive` says (`modelauth login`). Without a terminal, runs fail.
    pub fn with_terminal(mut self) -> Self {
        self.force_terminal = true;
        self
    }

    /// Whether this run gets the terminal; an error when it needs one and cannot have it.
    /// A background refresh never prompts, and neither does a process that disabled it.
    fn terminal_for(&self, reason: RefreshReason) -> Result<bool, AuthError> {
        let allowed = PROMPTS_ALLOWED.load(Ordering::Relaxed);
        let needs = |why: &'static str| AuthError::Command {
            provider: self.provider.clone(),
            program: self.auth.command.as_str().into(),
            failure: CommandFailure::NeedsTerminal { why },
        };
        if self.force_terminal {
            return if has_terminal() {
                Ok(true)
            } else {
                Err(needs("this process has no terminal"))
            };
        }
        match self.auth.interactive {
            Interactive::IfAvailable => {
                Ok(reason != RefreshReason::RefreshAhead && allowed && has_terminal())
            }
            Interactive::Always if reason == RefreshReason::RefreshAhead => {
                Err(needs("a background refresh never prompts"))
            }
            Interactive::Always if !allowed => Err(needs("this process never prompts")),
            Interactive::Always if !has_terminal() => Err(needs("this process has no terminal")),
            Interactive::Always => Ok(true),
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl ExternalAuthRefresher for CommandRefresher {
    async fn refresh(&self, reason: RefreshReason) -> Result<FreshToken, AuthError> {
        // Why it runs, so a helper with a cache of its own knows to bypass it after a
        // rejection. Never the old token.
        let context = [
            ("MODELAUTH_PROVIDER", self.provider.as_ref()),
            ("MODELAUTH_REFRESH_REASON", reason.as_str()),
        ];
        let terminal = self.terminal_for(reason)?;
        run_with_context(&self.auth, &context, terminal)
            .await
            .map_err(|failure| AuthError::Command {
                provider: self.provider.clone(),
                program: self.auth.command.as_str().into(),
                failure,
            })
    }

    fn describe(&self) -> String {
        format!("command `{}`", self.auth.command)
    }
}

/// Where the command's program is, found the way a run finds it: `cwd` must exist, a name
/// with a `/` is resolved against `cwd`, a bare name is looked up on `PATH` (the command's
/// own `PATH` from `env` if set). Runs nothing; `modelauth check` warns with it.
///
/// # Errors
///
/// [`CommandFailure::CwdMissing`], [`CommandFailure::NotFound`] or
/// [`CommandFailure::NotExecutable`], as the run would fail.
pub fn locate_token_command(auth: &ModelProviderAuthInfo) -> Result<PathBuf, CommandFailure> {
    let cwd = auth.cwd.as_path();
    if !cwd.is_dir() {
        return Err(CommandFailure::CwdMissing {
            cwd: cwd.display().to_string(),
        });
    }
    resolve_program(&auth.command, cwd, auth.env.get("PATH").map(String::as_str))
}

/// Runs the command once and reads its token.
pub async fn run_token_command(auth: &ModelProviderAuthInfo) -> Result<FreshToken, CommandFailure> {
    run_with_context(auth, &[], false).await
}

/// Runs the command with `context` added to its environment (after the config's `env`);
/// with `terminal`, the command gets this process's terminal (stdin and stderr).
async fn run_with_context(
    auth: &ModelProviderAuthInfo,
    context: &[(&str, &str)],
    terminal: bool,
) -> Result<FreshToken, CommandFailure> {
    let stdout = run_capturing(auth, context, terminal).await?;
    let text = String::from_utf8(stdout).map_err(|_| CommandFailure::NotUtf8)?;
    let fresh = parse_output(&text, auth.format, SystemTime::now())?;
    // With `auth.header = "x-api-key"`, a helper header of that name would replace the
    // token itself.
    if fresh
        .headers
        .iter()
        .any(|(name, _)| name.as_str().eq_ignore_ascii_case(&auth.header))
    {
        return Err(CommandFailure::BadJson {
            reason: "`headers` names the header the token goes in (auth.header)".to_owned(),
        });
    }
    Ok(fresh)
}

/// Kills the command's process group unless disarmed, and makes sure the child is reaped.
/// For a terminal run, also puts the terminal's modes back as they were before it.
struct GroupGuard {
    child: Option<Child>,
    pgid: Option<i32>,
    /// The terminal's modes before a terminal run (a prompt may turn echo off and be
    /// killed before it turns it on again).
    terminal_modes: Option<nix::sys::termios::Termios>,
}

/// How long an abandoned terminal run (Ctrl-C at its prompt) gets after SIGINT to clean up
/// before it is killed.
const INTERRUPT_GRACE: Duration = Duration::from_millis(500);

impl GroupGuard {
    fn kill_group(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // ESRCH (the group is already gone) is fine.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        // Reached with `pgid` set only when the run was abandoned (timeout, cancellation,
        // oversized output): kill every process of the group, then reap the leader.
        let had_group = self.pgid.is_some();
        self.kill_group();
        if let Some(mut child) = self.child.take() {
            if !had_group {
                // A terminal run shares our group: SIGINT first, as Ctrl-C would, then a
                // short grace for it to put things back, then the kill.
                interrupt_then_kill(&mut child);
            }
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn(async move {
                        let _ = child.wait().await;
                    });
                }
                // No runtime left: tokio's kill_on_drop plus its orphan queue reap it.
                Err(_) => drop(child),
            }
        }
        if let Some(modes) = self.terminal_modes.take() {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                &modes,
            );
        }
    }
}

/// SIGINT to an abandoned terminal run, up to [`INTERRUPT_GRACE`] for it to exit, then
/// SIGKILL. Blocking, but only when a person has interrupted a prompt.
fn interrupt_then_kill(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGINT,
        );
        let deadline = std::time::Instant::now() + INTERRUPT_GRACE;
        while std::time::Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = child.start_kill();
}

async fn run_capturing(
    auth: &ModelProviderAuthInfo,
    context: &[(&str, &str)],
    terminal: bool,
) -> Result<Vec<u8>, CommandFailure> {
    let cwd = auth.cwd.as_path();
    let program = locate_token_command(auth)?;
    // The child changes into `cwd` before it runs the program: a relative path would be
    // looked up again from there. One resolution, from here, for the check and the run.
    let shown = program.clone();
    let program = std::path::absolute(&program).unwrap_or(program);

    let mut command = Command::new(&program);
    command
        .args(&auth.args)
        .current_dir(cwd)
        .envs(&auth.env)
        .envs(context.iter().copied())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    if terminal {
        // The terminal's foreground process group is ours: the command stays in it so that
        // it may read the terminal (its own group would be stopped by SIGTTIN). Its prompts
        // go to the terminal; only stdout is read.
        command.stdin(Stdio::inherit()).stderr(Stdio::inherit());
    } else {
        command
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
    }
    let terminal_modes = terminal
        .then(|| nix::sys::termios::tcgetattr(std::io::stdin()).ok())
        .flatten();
    let mut child = spawn_retrying_busy(&mut command)
        .await
        .map_err(|e| spawn_failure(&e, &shown))?;
    // Without its own group (a terminal run), only the command itself can be killed.
    let pgid = (!terminal)
        .then(|| child.id().and_then(|id| i32::try_from(id).ok()))
        .flatten();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut guard = GroupGuard {
        child: Some(child),
        pgid,
        terminal_modes,
    };

    let limit = if terminal {
        auth.interactive_timeout()
    } else {
        auth.timeout()
    };
    let outcome = tokio::time::timeout(limit, async {
        let Some(child) = guard.child.as_mut() else {
            return Err(CommandFailure::Spawn {
                reason: "lost the child process".to_owned(),
            });
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut stdout_task = Box::pin(read_capped(stdout, &mut out));
        let mut stderr_task = Box::pin(read_tail(stderr, &mut err));
        // Wait for exit while reading both pipes (a full pipe would block the command).
        let (mut stdout_done, mut stderr_done) = (false, false);
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                r = &mut stdout_task, if !stdout_done => { r?; stdout_done = true; }
                () = &mut stderr_task, if !stderr_done => stderr_done = true,
            }
        }
        .map_err(|e| CommandFailure::Io {
            reason: e.to_string(),
        })?;
        // The command has exited: collect what is still in the pipes. A background
        // grandchild may hold them open, so this wait is bounded; what was read is kept.
        let drained = tokio::time::timeout(DRAIN_AFTER_EXIT, async {
            if !stdout_done {
                (&mut stdout_task).await?;
            }
            if !stderr_done {
                (&mut stderr_task).await;
            }
            Ok::<(), CommandFailure>(())
        })
        .await;
        drop((stdout_task, stderr_task));
        let pipes_held = match drained {
            Ok(Err(failure)) => return Err(failure),
            Ok(Ok(())) => false,
            Err(_) => true,
        };
        Ok((status, out, err, pipes_held))
    })
    .await;

    match outcome {
        // Timed out: dropping the guard kills the group and reaps the leader.
        Err(_elapsed) => Err(CommandFailure::TimedOut {
            timeout_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
        }),
        // Oversized output or a read error: likewise.
        Ok(Err(failure)) => Err(failure),
        Ok(Ok((status, stdout, stderr, pipes_held))) => {
            // A process of the group still holds the command's pipes after it exited (a
            // background grandchild): it belongs to this run, and goes with it.
            if pipes_held {
                guard.kill_group();
            }
            // Exited and reaped: nothing is left to kill (the guard still puts the
            // terminal's modes back).
            guard.pgid = None;
            guard.child = None;
            if status.success() {
                Ok(stdout)
            } else {
                Err(CommandFailure::Exited {
                    status: describe_status(status),
                    stderr: stderr_excerpt(&stderr),
                    on_terminal: terminal,
                })
            }
        }
    }
}

/// Spawns, retrying briefly on ETXTBSY: a script that was just written (by an updater,
/// or by another thread while this process forked) is "busy" for a moment.
async fn spawn_retrying_busy(command: &mut Command) -> std::io::Result<Child> {
    let mut delay = Duration::from_millis(5);
    for _ in 0..6 {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            other => return other,
        }
    }
    command.spawn()
}

fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("status {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "an unknown status".to_owned(),
    }
}

/// Reads stdout up to [`MAX_STDOUT_BYTES`]; more is an error.
async fn read_capped(
    pipe: Option<impl AsyncRead + Unpin>,
    buf: &mut Vec<u8>,
) -> Result<(), CommandFailure> {
    let Some(mut pipe) = pipe else {
        return Ok(());
    };
    let mut chunk = [0u8; 8192];
    loop {
        let n = pipe
            .read(&mut chunk)
            .await
            .map_err(|e| CommandFailure::Io {
                reason: e.to_string(),
            })?;
        if n == 0 {
            return Ok(());
        }
        if buf.len() + n > MAX_STDOUT_BYTES {
            return Err(CommandFailure::OutputTooLarge {
                limit: MAX_STDOUT_BYTES,
            });
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

/// Reads stderr to the end, keeping only its last [`MAX_STDERR_EXCERPT_BYTES`].
async fn read_tail(pipe: Option<impl AsyncRead + Unpin>, buf: &mut Vec<u8>) {
    let Some(mut pipe) = pipe else {
        return;
    };
    let mut chunk = [0u8; 8192];
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if buf.len() > 2 * MAX_STDERR_EXCERPT_BYTES {
            buf.drain(..buf.len() - MAX_STDERR_EXCERPT_BYTES);
        }
    }
}

/// The last 2 KiB of stderr as one line: escape sequences and control characters removed,
/// whitespace folded (the same cleaning as gateway text).
fn stderr_excerpt(stderr: &[u8]) -> String {
    let tail = stderr
        .len()
        .checked_sub(MAX_STDERR_EXCERPT_BYTES)
        .and_then(|start| stderr.get(start..))
        .unwrap_or(stderr);
    Scrubber::new([]).excerpt(&String::from_utf8_lossy(tail), MAX_STDERR_EXCERPT_BYTES)
}

/// A name with a `/` is resolved against `cwd`; a bare name is looked up on `PATH` (the
/// command's own `PATH` from `env` if set, else the inherited one).
fn resolve_program(
    command: &str,
    cwd: &Path,
    path_override: Option<&str>,
) -> Result<PathBuf, CommandFailure> {
    if command.contains('/') {
        let path = provider_config::without_dot_components(&cwd.join(command));
        // A relative path keeps a leading `./`, so it is never looked up on PATH.
        let path = if path.is_relative() {
            Path::new(".").join(path)
        } else {
            path
        };
        return match std::fs::metadata(&path) {
            Err(_) => Err(CommandFailure::NotFound {
                looked_in: format!("no file at {}", path.display()),
            }),
            Ok(meta) if meta.is_dir() || meta.permissions().mode() & 0o111 == 0 => {
                Err(CommandFailure::NotExecutable {
                    path: path.display().to_string(),
                })
            }
            Ok(_) => Ok(path),
        };
    }
    let search = path_override
        .map(std::ffi::OsString::from)
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_default();
    let mut not_executable = None;
    for dir in std::env::split_paths(&search) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(command);
        if let Ok(meta) = std::fs::metadata(&candidate)
            && meta.is_file()
        {
            if meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
            not_executable.get_or_insert(candidate);
        }
    }
    match not_executable {
        Some(path) => Err(CommandFailure::NotExecutable {
            path: path.display().to_string(),
        }),
        None => Err(CommandFailure::NotFound {
            looked_in: "not on PATH".to_owned(),
        }),
    }
}

fn spawn_failure(e: &std::io::Error, program: &Path) -> CommandFailure {
    match e.kind() {
        std::io::ErrorKind::NotFound => CommandFailure::NotFound {
            looked_in: format!("{} (or its interpreter) does not exist", program.display()),
        },
        std::io::ErrorKind::PermissionDenied => CommandFailure::NotExecutable {
            path: program.display().to_string(),
        },
        _ if e.raw_os_error() == Some(nix::libc::ENOEXEC) => CommandFailure::Spawn {
            reason: format!(
                "{} is not a program the system can run (a script needs a #! line)",
                program.display()
            ),
        },
        _ => CommandFailure::Spawn {
            reason: e.to_string(),
        },
    }
}
