//! `modelauth token [-p ID] [--show] [--json] [--exec-credential] [--forget]`.

use std::time::{Duration, SystemTime};

use provider_auth::{AuthManager, SharedStore};
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
    /// `command`, `shared_store`, `env_key`, `bearer_token` or `base_session`.
    pub source: &'static str,
    /// Where it came from, in words (`command \`gcloud\``).
    pub from: String,
    /// How long obtaining it took.
    pub elapsed: Duration,
    /// The cached token's place in its lifetime (command auth only).
    pub status: Option<provider_auth::TokenStatus>,
    /// Runs of the command so far in this process (command auth only).
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
            line.push_str(&format!("; command runs: {runs}"));
        }
        line
    }
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
        AuthKind::Command if status.is_some_and(|s| s.from_shared_store) => "shared_store",
        AuthKind::Command => "command",
        AuthKind::EnvKey => "env_key",
        AuthKind::BearerToken => "bearer_token",
        AuthKind::BaseSession => "base_session",
        _ => "none",
    };
    let from = match (info.auth_kind(), &info.auth) {
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

/// Obtains a token; returns what to print.
pub async fn token(
    id: &str,
    info: &ModelProviderInfo,
    manager: &dyn AuthManager,
    output: Output,
) -> Result<String, CliError> {
    let Some(obtained) = obtain(info, manager).await? else {
        return if output == Output::Summary {
            Ok(format!("{id}: this provider sends no credentials\n"))
        } else {
            Err(CliError::runtime(format!(
                "provider `{id}` uses no credentials; there is no token to show"
            )))
        };
    };
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
    let refresher = provider_auth::CommandRefresher::new(id, auth.clone()).with_terminal();
    let fresh = provider_auth::ExternalAuthRefresher::refresh(
        &refresher,
        provider_auth::RefreshReason::Initial,
    )
    .await
    .map_err(|e| CliError::from_error("could not log in", &e))?;
    store.save(auth, &fresh).map_err(|e| {
        CliError::runtime(format!(
            "cannot write {}: {e}",
            store.entry_path(auth).display()
        ))
    })?;
    Ok(format!(
        "{id}: logged in; the token is in the shared store ({} chars, redacted)\n",
        fresh.token.len()
    ))
}

/// `--forget`: deletes the provider's shared entry.
pub fn forget(
    id: &str,
    info: &ModelProviderInfo,
    store: Option<&SharedStore>,
) -> Result<String, CliError> {
    let (auth, store) = command_and_store(id, info, store, "there is no shared token to forget")?;
    match store.forget(auth) {
        Ok(true) => Ok(format!("{id}: shared token forgotten\n")),
        Ok(false) => Ok(format!("{id}: no shared token to forget\n")),
        Err(e) => Err(CliError::runtime(format!(
            "cannot delete {}: {e}",
            store.entry_path(auth).display()
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
