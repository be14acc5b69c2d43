//! `modelauth token [-p ID] [--show] [--json] [--exec-credential] [--forget]`.

use std::time::{Duration, SystemTime};

use std::sync::Arc;

use provider_auth::{AuthManager, Credential, SharedStore, TokenScope};
use provider_config::{AuthKind, ModelProviderInfo};

use crate::error::CliError;

/// What `token` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// A one-line summary in which the token never appears.
    Summary,
    /// The token alone (`--show`).
    Bare,
    /// `{"provider", "expires_at", "obtained_at", "source"}` (`--json`), with `"token"`
    /// when `with_token` (`--json --show`).
    Json {
        /// Whether the token is included.
        with_token: bool,
    },
    /// A Kubernetes `client.authentication.k8s.io/v1` ExecCredential.
    ExecCredential,
}

/// A credential just obtained, with what can be said about it without the token.
pub struct Obtained {
    /// The token (printed only by `--show`, `--json --show` and `--exec-credential`).
    pub token: provider_auth::AuthToken,
    /// `command`, `oauth2`, `shared_store`, `env_key`, `bearer_token` or `base_session`.
    pub source: &'static str,
    /// Where it came from, in words (`command \`gcloud\``).
    pub from: String,
    /// How long obtaining it took.
    pub elapsed: Duration,
    /// The cached token's place in its lifetime (command auth only).
    pub status: Option<provider_auth::TokenStatus>,
    /// Runs of the command (or OAuth2 exchanges) so far in this process (command and
    /// OAuth2 auth only).
    pub command_runs: Option<u64>,
    /// Names of the helper's extra headers (never their values).
    pub header_names: Vec<String>,
}

impl Obtained {
    /// `JWT` or `opaque`.
    pub fn kind(&self) -> &'static str {
        if self.token.expose_secret().split('.').count() == 3 {
            "JWT"
        } else {
            "opaque"
        }
    }

    /// When the token stops being used, by the clock.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.status
            .and_then(|s| s.expires_in)
            .and_then(|left| SystemTime::now().checked_add(left))
    }

    /// The one-line summary of `token`, in which the token never appears.
    pub fn summary(&self, id: &str) -> String {
        let mut line = format!(
            "{id}: token from {} ({} chars, {}, redacted) in {} ms",
            self.from,
            self.token.len(),
            self.kind(),
            self.elapsed.as_millis()
        );
        if let Some(status) = self.status {
            match status.expires_in {
                Some(left) => line.push_str(&format!("; used for {}", human(left))),
                None => line.push_str("; used until the gateway answers 401"),
            }
        }
        if let Some(runs) = self.command_runs {
            let what = if self.source == "oauth2" {
                "exchanges"
            } else {
                "command runs"
            };
            line.push_str(&format!("; {what}: {runs}"));
        }
        line
    }
}

/// How an OAuth2 token is minted, for the summary: the grant, the endpoint's host, and
/// where the subject token comes from, with the file's age (never a value).
fn oauth2_origin(auth: &provider_config::ModelProviderAuthInfo) -> String {
    let Some(oauth2) = &auth.oauth2 else {
        return String::new();
    };
    let mut out = oauth2.describe();
    if !oauth2.grant.needs_subject() {
        return out;
    }
    match (oauth2.subject_source(), &oauth2.subject_token_file) {
        (Some(provider_config::SubjectSource::File), Some(path)) => {
            out.push_str(&format!(", subject from file {}", path.display()));
            let age = std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok());
            if let Some(age) = age {
                out.push_str(&format!(" (written {} ago)", human(age)));
            }
        }
        (Some(source), _) => out.push_str(&format!(", subject from {}", source.as_str())),
        (None, _) => {}
    }
    out
}

/// Obtains the provider's credential through its manager; `None` when the provider sends
/// no credentials.
pub async fn obtain(
    info: &ModelProviderInfo,
    manager: &dyn AuthManager,
) -> Result<Option<Obtained>, CliError> {
    let started = std::time::Instant::now();
    let credential = manager
        .credential()
        .await
        .map_err(|e| CliError::from_error("could not obtain a token", &e))?;
    let Some(credential) = credential else {
        return Ok(None);
    };
    let elapsed = started.elapsed();
    let status = manager.token_status();
    let source = match info.auth_kind() {
        AuthKind::Command | AuthKind::OAuth2 if status.is_some_and(|s| s.from_shared_store) => {
            "shared_store"
        }
        AuthKind::Command => "command",
        AuthKind::OAuth2 => "oauth2",
        AuthKind::EnvKey => "env_key",
        AuthKind::BearerToken => "bearer_token",
        AuthKind::BaseSession => "base_session",
        _ => "none",
    };
    let from = match (info.auth_kind(), &info.auth) {
        (AuthKind::OAuth2, Some(auth)) if source == "shared_store" => {
            format!("the shared store ({})", oauth2_origin(auth))
        }
        (AuthKind::OAuth2, Some(auth)) => oauth2_origin(auth),
        (AuthKind::Command, Some(auth)) if source == "shared_store" => {
            format!("the shared store (command `{}`)", auth.command)
        }
        (AuthKind::Command, Some(auth)) => format!("command `{}`", auth.command),
        (AuthKind::EnvKey, _) => format!(
            "environment variable `{}`",
            info.env_key.as_deref().unwrap_or_default()
        ),
        (AuthKind::BearerToken, _) => "experimental_bearer_token".to_owned(),
        (AuthKind::BaseSession, _) => "base session (OPENAI_API_KEY)".to_owned(),
        _ => "none".to_owned(),
    };
    Ok(Some(Obtained {
        token: credential.token.clone(),
        source,
        from,
        elapsed,
        status,
        command_runs: manager.stats().map(|s| s.command_runs),
        header_names: credential
            .headers
            .iter()
            .map(|(name, _)| name.as_str().to_owned())
            .collect(),
    }))
}

/// A call of `token` by another tool (SPEC §9.1): with the shared store, a caller whose
/// gateway rejected the token it was handed gets a new one.
pub struct HelperCall<'a> {
    /// The shared store.
    pub store: &'a SharedStore,
    /// The calling process, as the store remembers it ([`caller_id`]).
    pub caller: String,
    /// The caller says its last token was rejected (`--rejected`, `MODELAUTH_REJECTED=1`).
    pub rejected: bool,
}

/// A token read from the store is checked with the gateway before it is handed again to
/// the caller that had it, unless it was checked (or seen accepted) this recently.
const CHECKED_FOR: Duration = Duration::from_secs(1);
/// `--rejected` from a caller the store has no record of: a stored token younger than this
/// is taken as the caller's replacement already (another caller rotated it just now).
const REJECTED_GRACE: Duration = Duration::from_secs(2);
/// The probe's bound (`GET /models`): a helper call must not hang on a slow gateway.
const PROBE_TIMEOUT_MS: u64 = 10_000;

/// The calling process: the parent's pid and, where the system says, its start time (so a
/// reused pid is another caller). A parent that is only a shell wrapper (`sh -c 'modelauth
/// token ...'`, which is how Claude Code runs `apiKeyHelper` and many tools run a helper
/// command line) is a new process on every call, so the caller is the process that started
/// it: looked through up to four such shells.
pub fn caller_id() -> String {
    let mut caller = std::os::unix::process::parent_id();
    for _ in 0..4 {
        match shell_wrapper_parent(caller) {
            Some(parent) => caller = parent,
            None => break,
        }
    }
    match proc_stat_fields(caller).and_then(|fields| fields.get(19).cloned()) {
        Some(started) => format!("{caller}@{started}"),
        None => caller.to_string(),
    }
}

/// Shells whose `-c` run of a command line is a wrapper, not a caller of its own.
const SHELLS: &[&str] = &["sh", "dash", "bash", "zsh", "ksh", "mksh", "ash", "busybox"];

/// The parent of `pid` when `pid` is a shell running a command line given with `-c` (Linux:
/// read from `/proc`; elsewhere none, and the parent is the caller).
fn shell_wrapper_parent(pid: u32) -> Option<u32> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut args = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty());
    let program = args.next()?;
    let name = program.rsplit(|b| *b == b'/').next()?;
    if !SHELLS.iter().any(|shell| shell.as_bytes() == name) {
        return None;
    }
    // `-c`, or short options that include it (`-ec`, `-lc`).
    let runs_a_line =
        args.any(|a| a.starts_with(b"-") && !a.starts_with(b"--") && a.contains(&b'c'));
    if !runs_a_line {
        return None;
    }
    proc_stat_fields(pid)?.get(1)?.parse().ok()
}

/// The fields of `/proc/PID/stat` after the process name: state (0), ppid (1), ... start
/// time (19).
fn proc_stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Decides whether the helper caller gets `credential` or a new token (SPEC §9.1):
/// - a token this process just obtained by running the command is handed as it is;
/// - with `--rejected`, the token last handed to this caller (or, for a caller the store
///   has no record of, a stored token older than two seconds) is reported as rejected,
///   which rotates it through the store, once for every caller;
/// - a caller asking again for the token it already had is, by the way helper callers
///   work, most likely one whose gateway rejected it: the token is checked first with a
///   bounded `GET /models` (unless it was checked, or seen accepted, within the last
///   second), and a rejection there rotates it, through the same one-retry rule as every
///   request.
///
/// Every handout is recorded in the store, so the next call can tell a re-ask.
async fn heal(
    id: &str,
    info: &ModelProviderInfo,
    manager: &Arc<dyn AuthManager>,
    credential: Credential,
    helper: &HelperCall<'_>,
) -> Result<Credential, CliError> {
    let Some(scope) = TokenScope::of(id, info) else {
        return Ok(credential);
    };
    let status = manager.token_status();
    let from_store = status.is_some_and(|s| s.from_shared_store);
    let handed = credential.token.clone();
    let mut credential = credential;
    let handout = helper.store.hand_out(&scope, &helper.caller, &handed);
    if from_store {
        if helper.rejected {
            if handout.again || (!handout.caller_known && age(status) >= REJECTED_GRACE) {
                tracing::debug!(target: "modelauth", provider = id, "the caller says its token was rejected; rotating it");
                manager
                    .unauthorized(&credential)
                    .await
                    .map_err(|e| CliError::from_error("could not obtain a token", &e))?;
                credential = current(manager).await?;
            }
        } else if handout.again && handout.checked_ago.is_none_or(|ago| ago >= CHECKED_FOR) {
            match probe(id, info, manager).await? {
                Some(accepted) => credential = accepted,
                None => helper.store.mark_checked(&scope, &credential.token),
            }
        }
    }
    if !credential.token.same_secret(&handed) {
        helper
            .store
            .record_handout(&scope, &helper.caller, &credential.token);
    }
    Ok(credential)
}

/// How old the cached token is (zero when unknown).
fn age(status: Option<provider_auth::TokenStatus>) -> Duration {
    status
        .and_then(|s| s.obtained_at.elapsed().ok())
        .unwrap_or(Duration::ZERO)
}

/// The manager's credential now.
async fn current(manager: &Arc<dyn AuthManager>) -> Result<Credential, CliError> {
    manager
        .credential()
        .await
        .map_err(|e| CliError::from_error("could not obtain a token", &e))?
        .ok_or_else(|| CliError::runtime("the provider uses no credentials"))
}

/// Checks the current token with `GET /models` (bounded, no retries); a rejection rotates
/// it (one retry, as for every request). `Some` with the credential the gateway accepted,
/// `None` when the check said nothing either way (no `/models`, the gateway unreachable).
async fn probe(
    id: &str,
    info: &ModelProviderInfo,
    manager: &Arc<dyn AuthManager>,
) -> Result<Option<Credential>, CliError> {
    let mut bounded = info.clone();
    bounded.request_max_retries = 0;
    bounded.request_timeout_ms = bounded.request_timeout_ms.min(PROBE_TIMEOUT_MS);
    let client = model_client::ModelClient::new(id, bounded, Arc::clone(manager))
        .map_err(|e| CliError::from_error("could not build the client", &e))?;
    match client.list_models().await {
        Ok(_) => Ok(Some(current(manager).await?)),
        Err(e @ model_client::ClientError::Auth(_)) => {
            Err(CliError::from_error("could not obtain a token", &e))
        }
        Err(e) if e.is_auth_failure_after_fresh_token() => Err(CliError::from_error(
            "could not obtain a token the gateway accepts",
            &e,
        )),
        Err(e) => {
            tracing::debug!(target: "modelauth", provider = id, error = %e, "checking the stored token with GET /models said nothing either way; handing it out");
            Ok(None)
        }
    }
}

/// Obtains a token; returns what to print. `helper` (with the shared store) makes a caller
/// that was rejected get a new token ([`HelperCall`]).
pub async fn token(
    id: &str,
    info: &ModelProviderInfo,
    manager: &Arc<dyn AuthManager>,
    output: Output,
    helper: Option<HelperCall<'_>>,
) -> Result<String, CliError> {
    let Some(mut obtained) = obtain(info, manager.as_ref()).await? else {
        return if output == Output::Summary {
            Ok(format!("{id}: this provider sends no credentials\n"))
        } else {
            Err(CliError::runtime(format!(
                "provider `{id}` uses no credentials; there is no token to show"
            )))
        };
    };
    if let Some(helper) = &helper
        && matches!(info.auth_kind(), AuthKind::Command | AuthKind::OAuth2)
    {
        let credential = Credential {
            token: obtained.token.clone(),
            generation: obtained.status.map_or(0, |s| s.generation),
            headers: Arc::from(Vec::new()),
        };
        let healed = heal(id, info, manager, credential, helper).await?;
        if !healed.token.same_secret(&obtained.token) {
            obtained.token = healed.token;
            obtained.status = manager.token_status();
            if let Some(auth) = &info.auth {
                (obtained.source, obtained.from) = if auth.oauth2.is_some() {
                    ("oauth2", oauth2_origin(auth))
                } else {
                    ("command", format!("command `{}`", auth.command))
                };
            }
        }
    }
    let token = &obtained.token;
    let expires_at = obtained.expires_at();
    let obtained_at = obtained
        .status
        .map_or_else(SystemTime::now, |s| s.obtained_at);
    match output {
        Output::Bare => Ok(format!("{}\n", token.expose_secret())),
        Output::Json { with_token } => {
            let mut object = serde_json::json!({
                "provider": id,
                "expires_at": expires_at.map(provider_auth::format_rfc3339),
                "obtained_at": provider_auth::format_rfc3339(obtained_at),
                "source": obtained.source,
            });
            if with_token {
                object["token"] = serde_json::Value::String(token.expose_secret().to_owned());
            }
            Ok(format!("{object}\n"))
        }
        Output::ExecCredential => {
            let mut status = serde_json::json!({"token": token.expose_secret()});
            if let Some(at) = expires_at {
                status["expirationTimestamp"] =
                    serde_json::Value::String(provider_auth::format_rfc3339(at));
            }
            let object = serde_json::json!({
                "apiVersion": "client.authentication.k8s.io/v1",
                "kind": "ExecCredential",
                "spec": {"interactive": false},
                "status": status,
            });
            Ok(format!("{object}\n"))
        }
        Output::Summary => Ok(format!("{}\n", obtained.summary(id))),
    }
}

/// `modelauth login`: runs the command once with the terminal and writes the token to the
/// shared store.
pub async fn login(
    id: &str,
    info: &ModelProviderInfo,
    store: Option<&SharedStore>,
) -> Result<String, CliError> {
    let (auth, store) = command_and_store(id, info, store, "there is nothing to log in to")?;
    let scope = TokenScope::new(id, &info.base_url, auth.clone());
    let fresh = match &auth.oauth2 {
        Some(oauth2) => {
            let refresher = provider_auth::OAuth2Refresher::new(id, auth.clone())
                .ok_or_else(|| CliError::runtime("the oauth2 table is missing"))?
                .with_refresh_token_file(store.refresh_token_path(&scope));
            if oauth2.grant == provider_config::OAuth2Grant::DeviceCode {
                refresher
                    .device_login(&mut |prompt| eprint!("{}", device_prompt(id, prompt)))
                    .await
            } else {
                provider_auth::ExternalAuthRefresher::refresh(
                    &refresher,
                    provider_auth::RefreshReason::Initial,
                )
                .await
            }
        }
        None => {
            let refresher = provider_auth::CommandRefresher::new(id, auth.clone()).with_terminal();
            provider_auth::ExternalAuthRefresher::refresh(
                &refresher,
                provider_auth::RefreshReason::Initial,
            )
            .await
        }
    }
    .map_err(|e| CliError::from_error("could not log in", &e))?;
    store.save(&scope, &fresh).map_err(|e| {
        CliError::runtime(format!(
            "cannot write {}: {e}",
            store.entry_path(&scope).display()
        ))
    })?;
    let lasts = match fresh.expires_at {
        Some(at) => match at.duration_since(SystemTime::now()) {
            Ok(left) => format!(
                "it states it expires at {} (in {})",
                provider_auth::format_rfc3339(at),
                human(left)
            ),
            Err(_) => format!(
                "it states an expiry already past ({}): the helper printed an expired token, or this machine's clock is off",
                provider_auth::format_rfc3339(at)
            ),
        },
        None => match auth.refresh_interval() {
            Some(interval) => format!(
                "it states no expiry, so it is used for {} (refresh_interval_ms)",
                human(interval)
            ),
            None => "it states no expiry, so it is used until the gateway rejects it".to_owned(),
        },
    };
    Ok(format!(
        "{id}: logged in; the token is in the shared store ({} chars, redacted); {lasts}\n",
        fresh.token.len()
    ))
}

/// What `login` prints for the device flow, on stderr: where to go and what to type. Nothing
/// is opened: the person may be on another device.
fn device_prompt(id: &str, prompt: &provider_auth::DevicePrompt) -> String {
    let mut out = format!(
        "To log in to `{id}`, open {} and enter the code {} (it expires in {}).\n",
        prompt.verification_uri,
        prompt.user_code,
        human(prompt.expires_in)
    );
    if let Some(complete) = &prompt.verification_uri_complete {
        out.push_str(&format!("Or open {complete}\n"));
    }
    out.push_str("Waiting for the approval...\n");
    out
}

/// `--forget`: deletes the provider's shared entry.
pub fn forget(
    id: &str,
    info: &ModelProviderInfo,
    store: Option<&SharedStore>,
) -> Result<String, CliError> {
    let (auth, store) = command_and_store(id, info, store, "there is no shared token to forget")?;
    let scope = TokenScope::new(id, &info.base_url, auth.clone());
    match store.forget(&scope) {
        Ok(true) => Ok(format!("{id}: shared token forgotten\n")),
        Ok(false) => Ok(format!("{id}: no shared token to forget\n")),
        Err(e) => Err(CliError::runtime(format!(
            "cannot delete {}: {e}",
            store.entry_path(&scope).display()
        ))),
    }
}

/// The provider's token command and the shared store, for `login` and `--forget`; `nothing`
/// says what is missing without a command.
fn command_and_store<'a>(
    id: &str,
    info: &'a ModelProviderInfo,
    store: Option<&'a SharedStore>,
    nothing: &str,
) -> Result<(&'a provider_config::ModelProviderAuthInfo, &'a SharedStore), CliError> {
    let Some(auth) = &info.auth else {
        return Err(CliError::Usage(format!(
            "provider `{id}` has no token command; {nothing}"
        )));
    };
    let Some(store) = store else {
        return Err(CliError::runtime(
            "there is no shared token store (set XDG_RUNTIME_DIR or MODELAUTH_CACHE_DIR)",
        ));
    };
    Ok((auth, store))
}

/// `1h 2m 3s`, `4m 5s`, `6s`, `250ms`.
pub fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    }
}

/// How often `--watch` looks for the token of a refresh under way.
const WATCH_POLL: Duration = Duration::from_millis(50);

/// The longest wait after a failed run in `--watch` before the next try (from 1 s,
/// doubling); the token source's own backoff holds too.
const WATCH_RETRY_MAX: Duration = Duration::from_secs(30);

/// `token --write FILE [--watch]`: the token (in `output`'s shape) written to `file`
/// atomically, mode 0600. With `watch`, a new token is written each time the one in the
/// file reaches 80% of its lifetime (the cache's refresh ahead; the lifetime itself ends
/// before the stated expiry, by the skew),
/// until SIGTERM or SIGINT; a failed run keeps the file as it is and is tried again after
/// a backoff (1 s doubling to 30 s).
pub async fn write(
    id: &str,
    info: &ModelProviderInfo,
    manager: &Arc<dyn AuthManager>,
    output: Output,
    file: &std::path::Path,
    watch: bool,
) -> Result<(), CliError> {
    if !watch {
        let text = token(id, info, manager, output, None).await?;
        return write_atomically(file, &text);
    }
    let mut retry = Duration::from_secs(1);
    // What the file holds (a secret: kept as one, zeroed when dropped).
    let mut written: Option<provider_auth::AuthToken> = None;
    // One listener for the whole loop: a signal that comes while a token is being obtained
    // is kept for the next look, never lost between two listeners.
    let stop = crate::signals::terminated();
    tokio::pin!(stop);
    loop {
        let obtained = tokio::select! {
            obtained = token(id, info, manager, output, None) => obtained,
            _ = &mut stop => return Ok(()),
        };
        let wait = match obtained {
            Ok(text) => {
                if written.as_ref().is_none_or(|w| w.expose_secret() != text) {
                    write_atomically(file, &text)?;
                    tracing::info!(target: "modelauth", provider = id, file = %file.display(), "token written");
                    written = Some(provider_auth::AuthToken::new(text));
                }
                retry = Duration::from_secs(1);
                let status = manager.token_status();
                match (
                    status.and_then(|s| s.expires_in),
                    status.and_then(|s| s.refresh_in),
                ) {
                    (None, _) => {
                        // Kept until a 401 (or no credential): nothing more to write.
                        (&mut stop).await;
                        return Ok(());
                    }
                    // The next token is asked for at 80% of this one's lifetime, so the
                    // file never holds a token at the end of its life: the call after the
                    // wait starts the refresh in the background and keeps the current one.
                    (Some(_), Some(refresh_in)) if !refresh_in.is_zero() => {
                        refresh_in + Duration::from_millis(1)
                    }
                    // The refresh is under way: look again shortly for its token.
                    (Some(left), Some(_)) => left.min(WATCH_POLL) + Duration::from_millis(1),
                    // No refresh ahead: past the lifetime the next call runs the source.
                    (Some(left), None) => left + Duration::from_millis(1),
                }
            }
            Err(e) => {
                eprintln!(
                    "warning: {}; trying again in {} s",
                    e.render_plain(),
                    retry.as_secs()
                );
                let wait = retry;
                retry = (retry * 2).min(WATCH_RETRY_MAX);
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = &mut stop => return Ok(()),
        }
    }
}

/// Writes `text` to `file` so that a reader sees the old content or the new, never a part:
/// a temporary file beside it (mode 0600), fsync, rename, fsync of the folder.
fn write_atomically(file: &std::path::Path, text: &str) -> Result<(), CliError> {
    provider_auth::write_private_file(file, text.as_bytes()).map_err(|e| {
        CliError::runtime(format!("cannot write the token to {}: {e}", file.display()))
    })?;
    // The rename itself is durable once the folder is synced.
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    if let Ok(folder) = std::fs::File::open(dir) {
        let _ = folder.sync_all();
    }
    Ok(())
}

/// `modelauth token`'s flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Provider id (default: the config's model_provider).
    #[arg(short, long = "provider", value_name = "ID")]
    pub provider: Option<String>,
    /// Print only the token, for piping into another tool (with --json: add it).
    #[arg(long)]
    pub show: bool,
    /// Print {"provider", "expires_at", "obtained_at", "source"} as one JSON object.
    #[arg(long, conflicts_with_all = ["exec_credential", "forget"])]
    pub json: bool,
    /// Print a Kubernetes client.authentication.k8s.io/v1 ExecCredential.
    #[arg(long, conflicts_with_all = ["show", "forget"])]
    pub exec_credential: bool,
    /// Delete the provider's entry in the shared token store.
    #[arg(long, conflicts_with = "show")]
    pub forget: bool,
    /// The token this caller was handed last was rejected by its gateway: rotate it
    /// (once for every caller). Also MODELAUTH_REJECTED=1.
    #[arg(long, conflicts_with = "forget")]
    pub rejected: bool,
    /// Write the token (or --json, --exec-credential) to FILE instead of stdout:
    /// atomically (a temporary file, fsync, rename), mode 0600.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["forget", "rejected", "show"])]
    pub write: Option<std::path::PathBuf>,
    /// With --write: keep FILE fresh, writing each new token before the one in it
    /// expires, until SIGTERM or SIGINT (then exit 0).
    #[arg(long, requires = "write")]
    pub watch: bool,
}

/// `modelauth token`: a summary, the token, JSON, an ExecCredential, a file kept fresh, or
/// the shared entry forgotten.
pub fn run(args: Args, ctx: &crate::context::Context) -> Result<(), CliError> {
    let Args {
        provider,
        show,
        json,
        exec_credential,
        forget,
        rejected,
        write,
        watch,
    } = args;
    let chosen = ctx.provider(provider.as_deref())?;
    let (id, info) = (chosen.id.as_str(), &chosen.info);
    if let Some(file) = write {
        let output = if json {
            Output::Json { with_token: true }
        } else if exec_credential {
            Output::ExecCredential
        } else {
            Output::Bare
        };
        let manager = chosen.manager()?;
        let written = self::write(id, info, &manager, output, &file, watch);
        // --watch ends on SIGTERM or SIGINT with exit 0: it handles them itself.
        return if watch {
            crate::built(tokio::runtime::Builder::new_current_thread())?.block_on(written)
        } else {
            crate::block_on(written)
        };
    }
    if forget {
        return crate::output::print(&self::forget(id, info, ctx.store.as_ref())?);
    }
    let output = match (show, json, exec_credential) {
        (_, true, _) => Output::Json { with_token: show },
        (_, _, true) => Output::ExecCredential,
        (true, _, _) => Output::Bare,
        _ => Output::Summary,
    };
    let manager = chosen.manager()?;
    let helper = ctx.store.as_ref().map(|store| HelperCall {
        store,
        caller: caller_id(),
        rejected: rejected
            || std::env::var("MODELAUTH_REJECTED").is_ok_and(|v| v == "1" || v == "true"),
    });
    let out = crate::block_on(token(id, info, &manager, output, helper))?;
    crate::output::print(&out)
}
