//! `modelauth token [-p ID] [--show]`.

use std::time::Duration;

use provider_auth::AuthManager;
use provider_config::{AuthKind, ModelProviderInfo};

use crate::error::CliError;

/// Obtains a token; returns what to print: the token alone with `show`, else a summary in
/// which the token itself never appears.
pub async fn token(
    id: &str,
    info: &ModelProviderInfo,
    manager: &dyn AuthManager,
    show: bool,
) -> Result<String, CliError> {
    let started = std::time::Instant::now();
    let credential = manager
        .credential()
        .await
        .map_err(|e| CliError::from_error("could not obtain a token", &e))?;
    let Some(credential) = credential else {
        return if show {
            Err(CliError::runtime(format!(
                "provider `{id}` uses no credentials; there is no token to show"
            )))
        } else {
            Ok(format!("{id}: this provider sends no credentials\n"))
        };
    };
    if show {
        return Ok(format!("{}\n", credential.token.expose_secret()));
    }
    let token = &credential.token;
    let kind = if token.expose_secret().split('.').count() == 3 {
        "JWT"
    } else {
        "opaque"
    };
    let source = match (info.auth_kind(), &info.auth) {
        (AuthKind::Command, Some(auth)) => format!("command `{}`", auth.command),
        (AuthKind::EnvKey, _) => format!(
            "environment variable `{}`",
            info.env_key.as_deref().unwrap_or_default()
        ),
        (AuthKind::BearerToken, _) => "experimental_bearer_token".to_owned(),
        (AuthKind::BaseSession, _) => "base session (OPENAI_API_KEY)".to_owned(),
        _ => "none".to_owned(),
    };
    let mut line = format!(
        "{id}: token from {source} ({} chars, {kind}, redacted) in {} ms",
        token.len(),
        started.elapsed().as_millis()
    );
    if let Some(status) = manager.token_status() {
        match status.expires_in {
            Some(left) => line.push_str(&format!("; used for {}", human(left))),
            None => line.push_str("; used until the gateway answers 401"),
        }
    }
    if let Some(stats) = manager.stats() {
        line.push_str(&format!("; command runs: {}", stats.command_runs));
    }
    line.push('\n');
    Ok(line)
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
